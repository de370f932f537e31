//! Running the database's client tools: argv without secrets, a clean environment, secrets in
//! private 0600 files, stderr kept (its tail, redacted) for error messages, and the exit status
//! checked only after stdout has ended.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use tracing::Instrument;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::secret::redact;

/// Variables passed through from the runner's environment; everything else (including the
/// runner's own `DB_PASSWORD` and storage keys) stays out of the child.
const PASSED_THROUGH: &[&str] = &["PATH", "TZ", "TMPDIR", "LANG", "LC_ALL"];
const STDERR_TAIL_LINES: usize = 40;

/// A command line plus the child-only environment and the private files it needs.
#[derive(Debug)]
pub struct ToolCommand {
    program: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    private_dirs: Vec<tempfile::TempDir>,
}

impl ToolCommand {
    pub fn new(program: impl Into<String>) -> Self {
        ToolCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            private_dirs: Vec::new(),
        }
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets a variable in the child's environment only.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn get_args(&self) -> &[OsString] {
        &self.args
    }

    pub fn get_env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// Writes `contents` to a file readable only by this user, in a private directory that is
    /// removed when the command is dropped. Returns its path, for the tool's options.
    pub fn private_file(&mut self, name: &str, contents: &[u8]) -> Result<PathBuf, Error> {
        let dir = tempfile::Builder::new()
            .prefix("backup-runner-")
            .tempdir()
            .map_err(|e| Error::Internal(format!("cannot create a private temp dir: {e}")))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Internal(format!("cannot protect the private temp dir: {e}")))?;
        let path = dir.path().join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(contents).map(|_| f))
            .map_err(|e| Error::Internal(format!("cannot write a private file: {e}")))?;
        file.flush()
            .map_err(|e| Error::Internal(format!("cannot write a private file: {e}")))?;
        self.private_dirs.push(dir);
        Ok(path)
    }

    /// The command line for logs; argv never holds secrets, so it is safe to print.
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        redact(&s)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).env_clear();
        for key in PASSED_THROUGH {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        if std::env::var_os("PATH").is_none() {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    fn spawn_error(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Internal(format!(
                "{} is not installed or not on PATH: run the image built for this engine",
                self.program
            ))
        } else {
            Error::Internal(format!("cannot start {}: {e}", self.program))
        }
    }

    /// Runs a short command to completion, feeding `stdin`; returns stdout on success.
    pub async fn output(&self, stdin: &[u8]) -> Result<String, ToolFailure> {
        let mut cmd = self.command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| ToolFailure::spawn(self, e))?;
        let mut input = child.stdin.take().expect("stdin is piped");
        let data = stdin.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = input.write_all(&data).await;
        });
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| ToolFailure::spawn(self, e))?;
        let _ = writer.await;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ToolFailure {
                tool: self.program.clone(),
                status: describe_status(out.status),
                stderr: redact(String::from_utf8_lossy(&out.stderr).trim()),
            })
        }
    }

    /// Starts a long-running tool; stderr is drained in the background.
    pub fn spawn(self, stdin: Stdio, stdout: Stdio) -> Result<RunningTool, Error> {
        let mut cmd = self.command();
        cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(e))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let name = self.program.clone();
        let stderr_task = tokio::spawn(collect_stderr(name.clone(), stderr).in_current_span());
        Ok(RunningTool {
            name,
            child,
            stderr_task,
            _command: self,
        })
    }
}

/// A short command that failed.
#[derive(Debug, Clone)]
pub struct ToolFailure {
    pub tool: String,
    pub status: String,
    pub stderr: String,
}

impl ToolFailure {
    fn spawn(cmd: &ToolCommand, e: std::io::Error) -> Self {
        let stderr = match cmd.spawn_error(e) {
            Error::Internal(m) => m,
            other => other.to_string(),
        };
        ToolFailure {
            tool: cmd.program.clone(),
            status: "not started".into(),
            stderr,
        }
    }
}

impl From<ToolFailure> for Error {
    fn from(f: ToolFailure) -> Self {
        Error::Tool {
            tool: f.tool,
            status: f.status,
            detail: f.stderr,
        }
    }
}

/// A running dump or restore tool.
pub struct RunningTool {
    name: String,
    child: Child,
    stderr_task: JoinHandle<String>,
    /// Keeps the private files alive while the tool runs.
    _command: ToolCommand,
}

impl RunningTool {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn take_stdout(&mut self) -> ChildStdout {
        let stdout = self.child.stdout.take().expect("stdout is piped");
        widen_pipe(&stdout);
        stdout
    }

    pub fn take_stdin(&mut self) -> ChildStdin {
        let stdin = self.child.stdin.take().expect("stdin is piped");
        widen_pipe(&stdin);
        stdin
    }

    /// Stops the tool (used when its input turned out to be bad).
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        self.stderr_task.abort();
    }

    /// Waits for the tool and checks its exit status; a failure carries the stderr tail.
    pub async fn wait(mut self) -> Result<(), Error> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::Internal(format!("cannot wait for {}: {e}", self.name)))?;
        let tail = self.stderr_task.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(Error::Tool {
                tool: self.name,
                status: describe_status(status),
                detail: if tail.is_empty() {
                    "no error output".into()
                } else {
                    tail
                },
            })
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// The longest stderr line kept whole; the rest of a longer line is dropped (a tool writing
/// binary garbage to stderr must not grow the runner's memory).
const STDERR_LINE_MAX: usize = 16 << 10;

/// Logs each stderr line (redacted) and returns the last lines. Reads bytes, not text: a line
/// that is not UTF-8 is kept lossily, and the pipe is drained to its end whatever it carries, so
/// the tool never blocks or dies on a full or closed stderr.
async fn collect_stderr<R: tokio::io::AsyncRead + Unpin>(tool: String, stderr: R) -> String {
    let mut reader = BufReader::new(stderr);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line_bounded(&mut reader, &mut line).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(tool = %tool, "reading the tool's error output failed: {e}");
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        let line = redact(text.trim_end_matches(['\n', '\r']));
        tracing::warn!(tool = %tool, "{line}");
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into_iter().collect::<Vec<_>>().join("\n")
}

/// Reads one line (through its newline) into `line`, keeping at most `STDERR_LINE_MAX` bytes of
/// it; returns the bytes consumed (0 at the end of the stream).
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = STDERR_LINE_MAX.saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

/// Room in the pipe between a tool and the pipeline (the kernel's default is 64 KiB): while the
/// compressor waits for a worker, the tool keeps writing instead of stalling with its server.
const PIPE_SIZE: i32 = 1 << 20;

/// Grows a pipe to `PIPE_SIZE`; where the kernel refuses (a lower pipe-max-size), the default
/// size only costs speed.
pub fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a file descriptor this process owns, with an integer argument.
    let _ = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn child_environment_is_clean() {
        std::env::set_var("DB_PASSWORD", "runner-env-secret");
        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "env"]).env("ONLY_FOR_CHILD", "1");
        let out = cmd.output(b"").await.unwrap();
        assert!(out.contains("ONLY_FOR_CHILD=1"));
        assert!(!out.contains("runner-env-secret"), "{out}");
    }

    #[tokio::test]
    async fn private_file_is_0600_and_removed_on_drop() {
        let mut cmd = ToolCommand::new("true");
        let path = cmd.private_file("pgpass", b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(cmd);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn failure_keeps_the_stderr_tail() {
        let mut cmd = ToolCommand::new("sh");
        cmd.args(["-c", "echo first >&2; echo boom >&2; exit 3"]);
        let tool = cmd.spawn(Stdio::null(), Stdio::null()).unwrap();
        match tool.wait().await {
            Err(Error::Tool { status, detail, .. }) => {
                assert_eq!(status, "exit code 3");
                assert_eq!(detail, "first\nboom");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn stderr_that_is_not_utf8_is_read_to_its_end() {
        let mut cmd = ToolCommand::new("sh");
        // Invalid UTF-8 first, then a long line, then the error that matters.
        cmd.args([
            "-c",
            "printf 'bad \\377\\376 bytes\\n' >&2; head -c 100000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'the real error' >&2; exit 4",
        ]);
        let tool = cmd.spawn(Stdio::null(), Stdio::null()).unwrap();
        match tool.wait().await {
            Err(Error::Tool { status, detail, .. }) => {
                assert_eq!(status, "exit code 4");
                let lines: Vec<&str> = detail.lines().collect();
                assert_eq!(lines.len(), 3, "{detail:.200}");
                assert_eq!(lines[0], "bad \u{fffd}\u{fffd} bytes");
                assert_eq!(lines[1].len(), STDERR_LINE_MAX);
                assert_eq!(lines[2], "the real error");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let cmd = ToolCommand::new("definitely-not-installed-tool");
        let err = cmd.spawn(Stdio::null(), Stdio::null()).err().unwrap();
        assert!(err.to_string().contains("not installed"), "{err}");
    }
}
