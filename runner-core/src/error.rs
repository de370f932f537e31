//! The job's error type and the exit-code table a Kubernetes `podFailurePolicy` can act on.

use crate::env::ConfigError;

/// Why a job failed. Each variant maps to one exit code, so orchestration can tell a bad config
/// (do not retry) from an unreachable server (retry later).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Authentication failed, or the role or database does not exist.
    #[error("the database refused the connection: {0}")]
    DbRefused(String),
    #[error("cannot reach the database: {0}")]
    DbUnavailable(String),
    /// Server, client tools and backup format do not fit together.
    #[error("incompatible: {0}")]
    Incompatible(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("{tool} failed ({status}): {detail}")]
    Tool {
        tool: String,
        status: String,
        detail: String,
    },
    /// A backup is already at the key (or another job wrote one there meanwhile) and
    /// `BACKUP_OVERWRITE` does not allow replacing it.
    #[error("refused to replace a backup: {0}")]
    Conflict(String),
    /// The dump tool sent nothing for longer than `DUMP_STALL_TIMEOUT_SECS`.
    #[error("the dump stalled: {0}")]
    Stalled(String),
    /// The backup is missing, incomplete or corrupt.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The backup would not be an exact copy and `STRICT_FIDELITY` forbids it.
    #[error("the backup would not be exact (STRICT_FIDELITY=true): {0}")]
    Loss(String),
    /// `check`: the newest complete backup is older than `CHECK_MAX_AGE`, or there is none.
    #[error("backups are stale: {0}")]
    Stale(String),
    #[error("interrupted by {0}: the job was stopped before it finished")]
    Interrupted(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Config,
            Error::DbRefused(_) => ExitCode::DbRefused,
            Error::DbUnavailable(_) => ExitCode::DbUnavailable,
            Error::Incompatible(_) => ExitCode::Incompatible,
            Error::Storage(_) => ExitCode::Storage,
            Error::Tool { .. } | Error::Loss(_) | Error::Stalled(_) => ExitCode::ToolFailed,
            Error::Conflict(_) => ExitCode::Conflict,
            Error::Integrity(_) => ExitCode::Integrity,
            Error::Stale(_) => ExitCode::Stale,
            Error::Interrupted("SIGINT") => ExitCode::InterruptedInt,
            Error::Interrupted(_) => ExitCode::InterruptedTerm,
            Error::Internal(_) => ExitCode::Internal,
        }
    }

    /// The same error with a sentence appended to its message (the class, and so the exit code,
    /// is unchanged).
    pub fn with_note(self, note: &str) -> Error {
        let add = |m: String| format!("{m}; {note}");
        match self {
            Error::DbRefused(m) => Error::DbRefused(add(m)),
            Error::DbUnavailable(m) => Error::DbUnavailable(add(m)),
            Error::Incompatible(m) => Error::Incompatible(add(m)),
            Error::Storage(m) => Error::Storage(add(m)),
            Error::Integrity(m) => Error::Integrity(add(m)),
            Error::Loss(m) => Error::Loss(add(m)),
            Error::Conflict(m) => Error::Conflict(add(m)),
            Error::Stalled(m) => Error::Stalled(add(m)),
            Error::Stale(m) => Error::Stale(add(m)),
            Error::Internal(m) => Error::Internal(add(m)),
            Error::Tool {
                tool,
                status,
                detail,
            } => Error::Tool {
                tool,
                status,
                detail: format!("{detail}\n{note}"),
            },
            other @ (Error::Config(_) | Error::Interrupted(_)) => other,
        }
    }

    pub fn storage(context: &str, err: impl std::fmt::Display) -> Error {
        Error::Storage(format!("{context}: {err}"))
    }
}

/// The process exit codes. Documented in the README; stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0,
    /// A bug or an unexpected condition.
    Internal = 1,
    /// Bad configuration: fix the job, do not retry.
    Config = 2,
    /// Authentication failed or the role/database does not exist: do not retry.
    DbRefused = 3,
    /// Database unreachable (network, DNS, timeout): may be retried.
    DbUnavailable = 4,
    /// Server newer than the image's tools, or a backup from a newer tool: use another image.
    Incompatible = 5,
    /// Object storage unreachable, denied or failing: may be retried.
    Storage = 6,
    /// The dump or restore tool exited non-zero: may be retried.
    ToolFailed = 7,
    /// The backup is missing its manifest, truncated or corrupt: do not retry.
    Integrity = 8,
    /// A backup is already at the key and `BACKUP_OVERWRITE` is not set, or another job wrote
    /// the same key meanwhile: do not retry with the same `BACKUP_PATH`.
    Conflict = 9,
    /// `check`: the newest complete backup is older than `CHECK_MAX_AGE`, or there is none:
    /// alert; retrying does not help until a backup succeeds.
    Stale = 10,
    /// Stopped by SIGINT (128 + 2).
    InterruptedInt = 130,
    /// Stopped by SIGTERM (128 + 15), as `docker stop`, Kubernetes and Cloud Run send.
    InterruptedTerm = 143,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let errors = [
            Error::Config(ConfigError { problems: vec![] }),
            Error::DbRefused(String::new()),
            Error::DbUnavailable(String::new()),
            Error::Incompatible(String::new()),
            Error::Storage(String::new()),
            Error::Tool {
                tool: String::new(),
                status: String::new(),
                detail: String::new(),
            },
            Error::Integrity(String::new()),
            Error::Conflict(String::new()),
            Error::Stale(String::new()),
            Error::Interrupted("SIGINT"),
            Error::Interrupted("SIGTERM"),
            Error::Internal(String::new()),
        ];
        let mut codes: Vec<u8> = errors.iter().map(|e| e.exit_code() as u8).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert!(!codes.contains(&0));
    }
}
