//! What every deployment target shares: the operations and their schedules, deadlines, retries
//! and resources; the secrets and the variables that point at them; the engine defaults; and the
//! exit codes a retry cannot fix.

use harness::matrix::Cell;
use runner_core::ExitCode;

/// Every exit code of the runner. [`retry`] classifies each; the README's table is checked
/// against both (see the tests).
pub const EXIT_CODES: [ExitCode; 13] = [
    ExitCode::Success,
    ExitCode::Internal,
    ExitCode::Config,
    ExitCode::DbRefused,
    ExitCode::DbUnavailable,
    ExitCode::Incompatible,
    ExitCode::Storage,
    ExitCode::ToolFailed,
    ExitCode::Integrity,
    ExitCode::Conflict,
    ExitCode::Stale,
    ExitCode::InterruptedInt,
    ExitCode::InterruptedTerm,
];

/// Whether running the same job again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Exit 0.
    NotAFailure,
    /// The same inputs fail the same way: a bad config, refused credentials, a version mismatch,
    /// a damaged backup, a key already taken, stale backups.
    No,
    /// Transient: the database or the store was unreachable, the job was stopped.
    Yes,
    /// Perhaps: a bug, or a dump tool that failed for a reason of its own.
    Maybe,
}

/// The README's "Retry?" column as a function. The match has no wildcard, so a new exit code
/// does not compile until it is classified here.
pub fn retry(code: ExitCode) -> Retry {
    match code {
        ExitCode::Success => Retry::NotAFailure,
        ExitCode::Internal | ExitCode::ToolFailed => Retry::Maybe,
        ExitCode::DbUnavailable
        | ExitCode::Storage
        | ExitCode::InterruptedInt
        | ExitCode::InterruptedTerm => Retry::Yes,
        ExitCode::Config
        | ExitCode::DbRefused
        | ExitCode::Incompatible
        | ExitCode::Integrity
        | ExitCode::Conflict
        | ExitCode::Stale => Retry::No,
    }
}

/// The exit codes on which a Kubernetes Job fails at once instead of retrying.
pub fn fail_job_codes() -> Vec<i32> {
    EXIT_CODES
        .iter()
        .filter(|c| retry(**c) == Retry::No)
        .map(|c| *c as i32)
        .collect()
}

/// One job the deployment runs. The same list drives Kubernetes, Cloud Run and the alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Backup,
    Prune,
    Check,
    Restore,
    Verify,
}

pub const OPS: [Op; 5] = [Op::Backup, Op::Prune, Op::Check, Op::Restore, Op::Verify];

/// Memory and CPU for one job, in MiB and millicores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request_millis: u32,
    pub memory_request_mib: u32,
    pub memory_limit_mib: u32,
    /// Cloud Run: whole vCPUs (a job takes at least 1).
    pub cloud_run_cpu: u32,
}

impl Resources {
    /// The CPU request as a Kubernetes quantity: `1`, `250m`.
    pub fn cpu_request(&self) -> String {
        let m = self.cpu_request_millis;
        if m.is_multiple_of(1000) {
            (m / 1000).to_string()
        } else {
            format!("{m}m")
        }
    }

    /// Cloud Run's memory: the Kubernetes limit, but at least the 512 MiB a job must have.
    pub fn cloud_run_memory_mib(&self) -> u32 {
        self.memory_limit_mib.max(512)
    }
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Backup => "backup",
            Op::Prune => "prune",
            Op::Check => "check",
            Op::Restore => "restore",
            Op::Verify => "verify",
        }
    }

    /// The cron schedule (UTC), from the README's "Scheduling" table. The jobs run on demand have
    /// one too, for when their template is unsuspended: verify weekly; restore yearly, and it
    /// should stay suspended.
    pub fn schedule(self) -> &'static str {
        match self {
            Op::Backup => "0 2 * * *",
            Op::Prune => "30 3 * * *",
            Op::Check => "0 * * * *",
            Op::Restore => "0 4 1 1 *",
            Op::Verify => "0 5 * * 0",
        }
    }

    /// Restore and verify run when an operator starts them, not on a schedule.
    pub fn on_demand(self) -> bool {
        matches!(self, Op::Restore | Op::Verify)
    }

    /// The variables that make the job this operation (besides the shared settings).
    pub fn env(self) -> Vec<(&'static str, &'static str)> {
        let mut env = vec![("OPERATION_TYPE", self.name())];
        match self {
            // The memory figures below were measured with two zstd workers; without a CPU limit
            // the runner would otherwise start one per core of the node (at most 4).
            Op::Backup => env.push(("COMPRESSION_THREADS", "2")),
            Op::Prune => env.extend([
                ("KEEP_DAILY", "7"),
                ("KEEP_WEEKLY", "5"),
                ("KEEP_MONTHLY", "12"),
            ]),
            Op::Check => env.push(("CHECK_MAX_AGE", CHECK_MAX_AGE)),
            Op::Restore | Op::Verify => env.push(("BACKUP_PATH", "latest")),
        }
        env
    }

    /// The longest a run may take (Kubernetes `activeDeadlineSeconds`, Cloud Run's task
    /// timeout). A job stopped at its deadline gets SIGTERM and reports `failed` (exit 143).
    pub fn deadline_secs(self) -> i64 {
        match self {
            Op::Backup | Op::Verify => 6 * HOUR,
            Op::Restore => 12 * HOUR,
            Op::Prune => HOUR,
            Op::Check => 15 * 60,
        }
    }

    /// Kubernetes `backoffLimit`: retries for the failures a retry may fix (the others fail the
    /// Job at once through the `podFailurePolicy`).
    pub fn backoff_limit(self) -> i32 {
        match self {
            // A database failover or a store's outage should not cost the night's backup.
            Op::Backup => 3,
            // Idempotent, and run again the next day anyway.
            Op::Prune | Op::Verify => 2,
            // Hourly: the next run is the retry. A restore is watched by an operator, and one
            // retry covers a blip; a retry after a partial non-atomic load is refused (exit 2).
            Op::Check | Op::Restore => 1,
        }
    }

    /// Cloud Run `maxRetries`. Cloud Run retries every non-zero exit, the codes no retry can fix
    /// included, so it gets fewer retries than Kubernetes.
    pub fn cloud_run_max_retries(self) -> i32 {
        match self {
            // One retry for a transient failure; a permanent one (exit 2, 3, 5) fails again in
            // seconds, before any data moves.
            Op::Backup | Op::Prune | Op::Verify => 1,
            // Exit 10 is the answer, not an accident: retrying it says the same thing.
            Op::Check => 0,
            // An operator decides; a retry of a partial MySQL or Redis load is refused anyway.
            Op::Restore => 0,
        }
    }

    /// Memory and CPU, from the measured peak RSS (BENCHMARKS.md) with headroom. The runner's
    /// own figure leaves out the dump or restore tool that runs beside it in the container,
    /// so the tool's is added. See deploy/README.md for the numbers.
    pub fn resources(self, engine: Engine) -> Resources {
        let (cpu_request_millis, memory_request_mib, memory_limit_mib, cloud_run_cpu) = match self {
            Op::Backup => (1000, 128, 512, 2),
            Op::Restore => match engine {
                Engine::Postgres => (250, 64, 256, 1),
                Engine::Mysql | Engine::Redis => (250, 64, 512, 1),
            },
            Op::Verify => (500, 64, 256, 1),
            Op::Prune | Op::Check => (100, 64, 256, 1),
        };
        Resources {
            cpu_request_millis,
            memory_request_mib,
            memory_limit_mib,
            cloud_run_cpu,
        }
    }

    /// The secrets this job may read. Kubernetes mounts these keys of the cell's Secret (when
    /// present); which ones it actually reads is chosen by the `*_FILE` variables set.
    pub fn secrets(self) -> Vec<SecretFile> {
        let mut s = Vec::new();
        if self.needs_database() {
            s.push(DB_PASSWORD);
        }
        s.extend([
            STORAGE_ACCESS_KEY_ID,
            STORAGE_SECRET_ACCESS_KEY,
            CALLBACK_SECRET,
        ]);
        match self {
            Op::Backup => s.push(ENCRYPTION_RECIPIENTS),
            Op::Restore | Op::Verify => s.push(ENCRYPTION_IDENTITY),
            Op::Prune | Op::Check => {}
        }
        s
    }

    /// Whether the job talks to the database (prune, check and verify read only the store).
    pub fn needs_database(self) -> bool {
        matches!(self, Op::Backup | Op::Restore)
    }
}

pub const HOUR: i64 = 3600;

/// How old the newest backup may be before `check` fails (exit 10) and the alert fires: a day
/// plus two hours of slack for a daily backup.
pub const CHECK_MAX_AGE: &str = "26h";
pub const CHECK_MAX_AGE_SECS: i64 = 26 * HOUR;

/// Finished Jobs are kept this long, for their logs.
pub const TTL_AFTER_FINISHED_SECS: i32 = 7 * 24 * 3600;

/// The uid and gid of the image's user (images/Dockerfile).
pub const IMAGE_UID: i64 = 10001;

/// A secret the runner reads from a file: the key in the Secret (and the file's name) and the
/// variable naming the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretFile {
    pub key: &'static str,
    pub var: &'static str,
    /// Which optional feature sets the variable; `None`: set by the base for every job that
    /// mounts it.
    pub feature: Option<Feature>,
}

/// An optional feature: a kustomize component that sets its `*_FILE` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Static S3 keys instead of the SDK's default chain (IRSA, instance roles).
    StorageKeys,
    /// Signed callbacks (`CALLBACK_SECRET`).
    Callbacks,
    /// age encryption: recipients for backups, an identity for restore and verify.
    Encryption,
}

pub const FEATURES: [Feature; 3] = [
    Feature::StorageKeys,
    Feature::Callbacks,
    Feature::Encryption,
];

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::StorageKeys => "storage-keys",
            Feature::Callbacks => "callbacks",
            Feature::Encryption => "encryption",
        }
    }
}

pub const DB_PASSWORD: SecretFile = SecretFile {
    key: "db-password",
    var: "DB_PASSWORD_FILE",
    feature: None,
};
pub const STORAGE_ACCESS_KEY_ID: SecretFile = SecretFile {
    key: "storage-access-key-id",
    var: "STORAGE_ACCESS_KEY_ID_FILE",
    feature: Some(Feature::StorageKeys),
};
pub const STORAGE_SECRET_ACCESS_KEY: SecretFile = SecretFile {
    key: "storage-secret-access-key",
    var: "STORAGE_SECRET_ACCESS_KEY_FILE",
    feature: Some(Feature::StorageKeys),
};
pub const CALLBACK_SECRET: SecretFile = SecretFile {
    key: "callback-secret",
    var: "CALLBACK_SECRET_FILE",
    feature: Some(Feature::Callbacks),
};
pub const ENCRYPTION_RECIPIENTS: SecretFile = SecretFile {
    key: "encryption-recipients",
    var: "ENCRYPTION_RECIPIENTS_FILE",
    feature: Some(Feature::Encryption),
};
pub const ENCRYPTION_IDENTITY: SecretFile = SecretFile {
    key: "encryption-identity",
    var: "ENCRYPTION_IDENTITY_FILE",
    feature: Some(Feature::Encryption),
};

pub const ALL_SECRETS: [SecretFile; 6] = [
    DB_PASSWORD,
    STORAGE_ACCESS_KEY_ID,
    STORAGE_SECRET_ACCESS_KEY,
    CALLBACK_SECRET,
    ENCRYPTION_RECIPIENTS,
    ENCRYPTION_IDENTITY,
];

/// Where Kubernetes mounts a job's secrets: one file per key.
pub const K8S_SECRETS_DIR: &str = "/run/secrets/backup-runner";

impl SecretFile {
    pub fn k8s_path(self) -> String {
        format!("{K8S_SECRETS_DIR}/{}", self.key)
    }

    /// Cloud Run mounts each Secret Manager secret as its own volume, in its own directory.
    pub fn cloud_run_dir(self) -> String {
        format!("/run/secrets/{}", self.key)
    }

    pub fn cloud_run_path(self) -> String {
        format!("{}/value", self.cloud_run_dir())
    }
}

/// The engine families, for their defaults and their tools' memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Mysql,
    Redis,
}

impl Engine {
    pub fn of(cell: &Cell) -> anyhow::Result<Engine> {
        Ok(match cell.engine.as_str() {
            "postgres" => Engine::Postgres,
            "mysql" => Engine::Mysql,
            "redis" => Engine::Redis,
            other => anyhow::bail!(
                "cell {}: no deployment defaults for engine {other}",
                cell.name
            ),
        })
    }

    pub fn port(self) -> &'static str {
        match self {
            Engine::Postgres => "5432",
            Engine::Mysql => "3306",
            Engine::Redis => "6379",
        }
    }

    /// The non-secret settings every job of a cell shares (placeholders to fill in). Blank
    /// values are unset for the runner and list the optional settings in place.
    pub fn settings(self, cell: &Cell, storage: Storage) -> Vec<(&'static str, String)> {
        let mut s = vec![
            ("DB_HOST", format!("{}.example.internal", cell.product())),
            ("DB_PORT", self.port().to_string()),
        ];
        match self {
            Engine::Postgres | Engine::Mysql => {
                s.push(("DB_NAME", "app".into()));
                s.push(("DB_USERNAME", "backup".into()));
            }
            // A backup holds the whole server; DB_USERNAME defaults to the `default` ACL user.
            Engine::Redis => {}
        }
        s.extend(storage.settings());
        s.push(("STORAGE_PREFIX", "backups".into()));
        s.push(("LOG_FORMAT", "json".into()));
        s
    }
}

/// Where the example settings point the storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// AWS S3 (Kubernetes' default: IRSA or an instance role, no keys).
    AwsS3,
    /// Google Cloud Storage through its S3 API (HMAC keys).
    Gcs,
}

impl Storage {
    fn settings(self) -> Vec<(&'static str, String)> {
        match self {
            Storage::AwsS3 => vec![
                ("STORAGE_TYPE", "s3".into()),
                ("STORAGE_BUCKET", "example-backups".into()),
                ("STORAGE_REGION", "us-east-1".into()),
                // Blank: AWS. Set for MinIO, R2, … (with STORAGE_TYPE).
                ("STORAGE_ENDPOINT", String::new()),
            ],
            Storage::Gcs => vec![
                ("STORAGE_TYPE", "gcs".into()),
                ("STORAGE_BUCKET", "example-backups".into()),
            ],
        }
    }
}

/// Optional settings listed blank in the ConfigMap, so that they can be found and filled in.
pub const OPTIONAL_SETTINGS: [&str; 2] = ["CALLBACK_URL", "METRICS_PUSHGATEWAY_URL"];

/// A name safe in Kubernetes object names and Cloud Run labels: `mariadb-10.11` → `mariadb-10-11`.
pub fn dns_name(cell: &Cell) -> String {
    cell.name.replace('.', "-")
}

/// The prefix of every object of one cell: `backup-runner-postgres-17`.
pub fn object_prefix(cell: &Cell) -> String {
    format!("backup-runner-{}", dns_name(cell))
}

pub fn job_name(cell: &Cell, op: Op) -> String {
    format!("{}-{}", object_prefix(cell), op.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of README.md's "Exit codes" table: (code, the "Retry?" column).
    fn readme_exit_codes() -> Vec<(i32, String)> {
        let readme = std::fs::read_to_string(crate::root().join("README.md")).unwrap();
        let section = readme
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("README.md has an Exit codes section");
        let section = section.split("\n## ").next().unwrap();
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| ")) {
            let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cols.len() != 3 || cols[0] == "Code" {
                continue;
            }
            for code in cols[0].split('/') {
                rows.push((code.trim().parse().unwrap(), cols[2].to_string()));
            }
        }
        rows
    }

    #[test]
    fn the_readme_exit_code_table_matches_the_classification() {
        let rows = readme_exit_codes();
        let mut readme_codes: Vec<i32> = rows.iter().map(|(c, _)| *c).collect();
        let mut ours: Vec<i32> = EXIT_CODES.iter().map(|c| *c as i32).collect();
        readme_codes.sort();
        ours.sort();
        assert_eq!(
            readme_codes, ours,
            "README.md's exit codes against EXIT_CODES"
        );
        for (code, column) in rows {
            let exit = *EXIT_CODES.iter().find(|c| **c as i32 == code).unwrap();
            let lower = column.to_lowercase();
            let expected = if lower.starts_with("no") {
                Retry::No
            } else if lower.starts_with("yes") {
                Retry::Yes
            } else if lower.starts_with("maybe") {
                Retry::Maybe
            } else {
                Retry::NotAFailure
            };
            assert_eq!(
                retry(exit),
                expected,
                "exit code {code}: README says {column:?}"
            );
        }
    }

    #[test]
    fn the_readme_pod_failure_policy_fragment_lists_the_same_codes() {
        let readme = std::fs::read_to_string(crate::root().join("README.md")).unwrap();
        let line = readme
            .lines()
            .find(|l| l.contains("onExitCodes:"))
            .expect("README.md shows a podFailurePolicy");
        let values = line
            .split("values: [")
            .nth(1)
            .unwrap()
            .split(']')
            .next()
            .unwrap();
        let codes: Vec<i32> = values
            .split(',')
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert_eq!(codes, fail_job_codes());
        assert_eq!(fail_job_codes(), [2, 3, 5, 8, 9, 10]);
    }

    #[test]
    fn every_variable_set_is_one_the_runner_reads() {
        let read = runner_core::config::CONDITIONALLY_READ;
        for s in ALL_SECRETS {
            assert!(read.contains(&s.var), "{} is not read by the runner", s.var);
        }
        let matrix = harness::matrix::Matrix::load().unwrap();
        let mut names: Vec<&str> = OPS.iter().flat_map(|op| op.env()).map(|(k, _)| k).collect();
        for cell in matrix.select(&[]).unwrap() {
            let engine = Engine::of(cell).unwrap();
            for storage in [Storage::AwsS3, Storage::Gcs] {
                for (k, _) in engine.settings(cell, storage) {
                    names.push(k);
                }
            }
        }
        for name in names {
            assert!(read.contains(&name), "{name} is not read by the runner");
        }
        // Read by the observers (runner-core/src/config/observe.rs).
        let observe =
            std::fs::read_to_string(crate::root().join("runner-core/src/config/observe.rs"))
                .unwrap();
        for name in OPTIONAL_SETTINGS {
            assert!(
                read.contains(&name) || observe.contains(&format!("\"{name}\"")),
                "{name} is not read by the runner"
            );
        }
    }

    #[test]
    fn names_are_dns_labels() {
        let matrix = harness::matrix::Matrix::load().unwrap();
        for cell in matrix.select(&[]).unwrap() {
            for op in OPS {
                let name = job_name(cell, op);
                // CronJob names are at most 52 characters (their Jobs get an 11-character suffix).
                assert!(name.len() <= 52, "{name}");
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                    "{name}"
                );
            }
        }
    }
}
