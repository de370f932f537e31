//! Reading configuration from environment variables while collecting every problem, so a bad
//! config is reported at once, in one message, before anything connects.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

use crate::secret::Secret;

/// The largest `*_FILE` secret accepted. Secrets are short; a bigger file is the wrong file (or a
/// device such as /dev/zero), and is refused without being read whole.
pub const SECRET_FILE_MAX_BYTES: u64 = 64 * 1024;

/// Prefixes of the runner's variables: a variable with one of them that the runner does not read
/// is most likely misspelt.
pub const RUNNER_PREFIXES: &[&str] = &[
    "DB_",
    "DATABASE_",
    "STORAGE_",
    "BACKUP_",
    "RESTORE_",
    "VERIFY_",
    "CALLBACK_",
    "COMPRESS",
    "JOB_",
    "LOG_",
    "RETENTION_",
    "KEEP_",
    "PRUNE_",
    "CHECK_",
    "ENCRYPTION_",
    "REDIS_",
    "MYSQL_",
    "POSTGRES_",
    "ENCRYPTION_",
    "KEEP_",
    "PRUNE_",
    "METRICS_",
    "HEALTHCHECK_",
    "DUMP_",
    "STRICT_",
    "OPERATION_",
    "PROGRESS_",
];

/// Names within this edit distance of a known name are reported as likely typos even without
/// one of the runner's prefixes.
const TYPO_DISTANCE: usize = 2;

/// One configuration problem: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub var: String,
    pub message: String,
}

/// Every problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {}: {}", p.var, p.message)?;
        }
        Ok(())
    }
}

/// Reads variables through a lookup function (the process environment in production, a map in
/// tests) and records problems instead of stopping at the first one.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

pub struct EnvReader<'a> {
    lookup: Lookup<'a>,
    problems: Vec<Problem>,
    /// Every name asked for, so variables nobody asked for can be pointed out.
    asked: RefCell<BTreeSet<String>>,
}

impl<'a> EnvReader<'a> {
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        EnvReader {
            lookup: Box::new(lookup),
            problems: Vec::new(),
            asked: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn from_process_env() -> EnvReader<'static> {
        EnvReader::new(|name| std::env::var(name).ok())
    }

    /// The raw value of `name`, blank or not; the name is recorded as one the runner reads.
    fn raw(&self, name: &str) -> Option<String> {
        if !self.asked.borrow().contains(name) {
            self.asked.borrow_mut().insert(name.to_string());
        }
        (self.lookup)(name)
    }

    /// The value of `name`; an empty or blank value counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|v| !v.trim().is_empty())
    }

    /// Every name asked for so far, sorted.
    pub fn names_read(&self) -> Vec<String> {
        self.asked.borrow().iter().cloned().collect()
    }

    /// Whether `name` is in the environment at all, even empty or blank.
    pub fn is_present(&self, name: &str) -> bool {
        self.raw(name).is_some()
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn problem(&mut self, var: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            var: var.into(),
            message: message.into(),
        });
    }

    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// A trimmed string value.
    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.trim().to_string())
    }

    /// A required value; records `hint` (how to fix it) when missing.
    pub fn required(&mut self, name: &str, hint: &str) -> Option<String> {
        let value = self.string(name);
        if value.is_none() {
            self.problem(name, format!("is required: {hint}"));
        }
        value
    }

    /// A value parsed with `FromStr`; `expected` describes valid values for the error message.
    pub fn parse<T: FromStr>(&mut self, name: &str, expected: &str) -> Option<T> {
        let raw = self.string(name)?;
        match raw.parse::<T>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.problem(name, format!("{raw:?} is not valid: expected {expected}"));
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in<T>(&mut self, name: &str, min: T, max: T, what: &str) -> Option<T>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("{what}, a whole number from {min} to {max}");
        let v: T = self.parse(name, &expected)?;
        if v < min || v > max {
            self.problem(name, format!("{v} is out of range: expected {expected}"));
            return None;
        }
        Some(v)
    }

    /// A boolean: true/false, 1/0, yes/no, on/off.
    pub fn bool(&mut self, name: &str) -> Option<bool> {
        let raw = self.string(name)?;
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => {
                self.problem(name, format!("{raw:?} is not a boolean: use true or false"));
                None
            }
        }
    }

    /// One of `choices` (case-insensitive), returned lowercased.
    pub fn choice(&mut self, name: &str, choices: &[&str]) -> Option<String> {
        let raw = self.string(name)?;
        let lower = raw.to_ascii_lowercase();
        if choices.contains(&lower.as_str()) {
            Some(lower)
        } else {
            self.problem(
                name,
                format!(
                    "{raw:?} is not supported: use one of {}",
                    choices.join(", ")
                ),
            );
            None
        }
    }

    /// A secret given either directly in `name` or as a file path in `name_FILE` (the Docker and
    /// Kubernetes secrets convention). The value itself never appears in a problem message. Line
    /// breaks at the end of a file are ignored; any other control character is refused, as is a
    /// file larger than [`SECRET_FILE_MAX_BYTES`].
    pub fn secret(&mut self, name: &str) -> Option<Secret> {
        self.secret_from(name).map(|(secret, _)| secret)
    }

    /// Like [`EnvReader::secret`], also naming the variable the value came from (`name` or
    /// `name_FILE`), for problems found in the value later.
    pub fn secret_from(&mut self, name: &str) -> Option<(Secret, String)> {
        let file_var = format!("{name}_FILE");
        let direct = self.raw(name).filter(|v| !v.is_empty());
        let file = self.string(&file_var);
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    name,
                    format!("is set together with {file_var}: set only one of them"),
                );
                None
            }
            (Some(v), None) => {
                if let Some(c) = control_character(&v) {
                    self.problem(
                        name,
                        format!(
                            "contains a control character ({}): remove it (the value is not shown)",
                            describe_control(c)
                        ),
                    );
                    return None;
                }
                Some((Secret::new(v), name.to_string()))
            }
            (None, Some(path)) => match read_secret_file(&path) {
                Ok(contents) => {
                    let value = contents.trim_end_matches(['\r', '\n']).to_string();
                    if value.is_empty() {
                        self.problem(&file_var, format!("file {path:?} is empty"));
                        None
                    } else if let Some(c) = control_character(&value) {
                        self.problem(
                            &file_var,
                            format!(
                                "file {path:?} contains a control character ({}): the file must hold \
                                 only the secret (line breaks at its end are ignored)",
                                describe_control(c)
                            ),
                        );
                        None
                    } else {
                        Some((Secret::new(value), file_var))
                    }
                }
                Err(message) => {
                    self.problem(&file_var, message);
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// Warnings for variables in `names` (the process environment's) that look meant for the
    /// runner but are not one it reads: a name with one of the runner's prefixes, or one close to
    /// a name it reads. Each names the nearest known variable when there is a plausible one.
    /// Known names are the ones asked for so far plus [`crate::config::CONDITIONALLY_READ`]
    /// (names read only in some configurations). Values are never shown.
    pub fn unknown_variables(&self, names: impl IntoIterator<Item = String>) -> Vec<String> {
        let asked = self.asked.borrow();
        let mut known: Vec<&str> = asked.iter().map(String::as_str).collect();
        known.extend_from_slice(crate::config::CONDITIONALLY_READ);
        known.sort_unstable();
        known.dedup();
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort_unstable();
        names.dedup();
        let mut warnings = Vec::new();
        for name in names {
            if known.binary_search(&name.as_str()).is_ok() {
                continue;
            }
            let upper = name.to_ascii_uppercase();
            let distances: Vec<(usize, &str)> = known
                .iter()
                .map(|k| (edit_distance(&upper, k), *k))
                .collect();
            let prefixed = RUNNER_PREFIXES.iter().any(|p| upper.starts_with(p));
            let close = upper.len() >= 5 && distances.iter().any(|(d, _)| *d <= TYPO_DISTANCE);
            if !prefixed && !close {
                continue;
            }
            let suggestion = distances
                .iter()
                .filter(|(d, k)| plausible(&upper, k, *d))
                .min_by_key(|(d, _)| *d);
            warnings.push(match suggestion {
                Some((_, k)) => format!(
                    "{name} is set, but it is not a variable the runner reads; did you mean {k}?"
                ),
                None => format!(
                    "{name} is set, but it is not a variable the runner reads (the README lists them)"
                ),
            });
        }
        warnings
    }

    /// Logs [`EnvReader::unknown_variables`] for the process environment.
    pub fn warn_unknown_variables(&self) {
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        for warning in self.unknown_variables(names) {
            tracing::warn!("{warning}");
        }
    }

    /// Ends reading: every recorded problem, or nothing.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// The first control character (below 0x20, or 0x7f) in `value`.
pub fn control_character(value: &str) -> Option<char> {
    value.chars().find(|c| (*c as u32) < 0x20 || *c == '\x7f')
}

/// A control character by name and code, for messages that must not show the value.
pub fn describe_control(c: char) -> String {
    let name = match c {
        '\n' => "a line feed",
        '\r' => "a carriage return",
        '\t' => "a tab",
        '\0' => "a NUL byte",
        '\x1b' => "an escape",
        '\x7f' => "a delete",
        _ => "a control character",
    };
    format!("{name}, 0x{:02X}", c as u32)
}

/// Reads a secret file, at most one byte more than [`SECRET_FILE_MAX_BYTES`].
pub(crate) fn read_secret_file(path: &str) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read file {path:?}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(SECRET_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read file {path:?}: {e}"))?;
    if bytes.len() as u64 > SECRET_FILE_MAX_BYTES {
        return Err(format!(
            "file {path:?} is larger than {} KiB, too large for a secret: point the variable at \
             the file that holds only the secret",
            SECRET_FILE_MAX_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("file {path:?} is not UTF-8 text"))
}

/// Whether `known` is worth suggesting for `name` at edit distance `d`: a small slip, or a name
/// that one of the two extends (`DB_USER` for `DB_USERNAME`).
fn plausible(name: &str, known: &str, d: usize) -> bool {
    let shorter = name.len().min(known.len());
    d <= TYPO_DISTANCE
        || d <= shorter / 3
        || (shorter >= 5 && (known.starts_with(name) || name.starts_with(known)))
}

/// Edit distance with adjacent transpositions (optimal string alignment), over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn reader(vars: &[(&str, &str)]) -> EnvReader<'static> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvReader::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn collects_every_problem() {
        let mut env = reader(&[("A", "x"), ("B", "maybe"), ("C", "99999")]);
        assert_eq!(env.parse::<u16>("A", "a port"), None);
        assert_eq!(env.bool("B"), None);
        assert_eq!(env.int_in::<u32>("C", 1, 100, "a count"), None);
        assert_eq!(env.required("D", "set it"), None);
        let err = env.finish().unwrap_err();
        let vars: Vec<_> = err.problems.iter().map(|p| p.var.as_str()).collect();
        assert_eq!(vars, ["A", "B", "C", "D"]);
        let text = err.to_string();
        assert!(
            text.starts_with("invalid configuration (4 problems):"),
            "{text}"
        );
    }

    #[test]
    fn blank_counts_as_unset() {
        let env = reader(&[("A", "  ")]);
        assert_eq!(env.string("A"), None);
    }

    #[test]
    fn secret_from_file_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file-secret\n").unwrap();
        let p = path.to_str().unwrap().to_string();
        let mut env = reader(&[("PW_FILE", &p)]);
        assert_eq!(env.secret("PW").unwrap().expose(), "from-file-secret");
        assert!(env.finish().is_ok());

        let mut env = reader(&[("PW", "direct-secret"), ("PW_FILE", &p)]);
        assert!(env.secret("PW").is_none());
        let text = env.finish().unwrap_err().to_string();
        assert!(text.contains("set only one"), "{text}");
        assert!(!text.contains("direct-secret"));
    }

    #[test]
    fn secret_file_missing_is_reported() {
        let mut env = reader(&[("PW_FILE", "/nonexistent/pw")]);
        assert!(env.secret("PW").is_none());
        let err = env.finish().unwrap_err();
        assert_eq!(err.problems[0].var, "PW_FILE");
    }

    #[test]
    fn secret_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let at_limit = dir.path().join("at-limit");
        std::fs::write(&at_limit, "a".repeat(SECRET_FILE_MAX_BYTES as usize)).unwrap();
        let over = dir.path().join("over");
        std::fs::write(&over, "a".repeat(SECRET_FILE_MAX_BYTES as usize + 1)).unwrap();
        let cases = [
            (at_limit.to_str().unwrap(), None),
            (over.to_str().unwrap(), Some("larger than 64 KiB")),
            ("/dev/zero", Some("larger than 64 KiB")),
        ];
        for (path, problem) in cases {
            let mut env = reader(&[("PW_FILE", path)]);
            let secret = env.secret("PW");
            assert_eq!(secret.is_some(), problem.is_none(), "{path}");
            match (problem, env.finish()) {
                (None, Ok(())) => {}
                (Some(expected), Err(err)) => {
                    assert_eq!(err.problems.len(), 1, "{path}: {err}");
                    assert_eq!(err.problems[0].var, "PW_FILE");
                    assert!(err.problems[0].message.contains(expected), "{err}");
                }
                (expected, got) => panic!("{path}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn control_characters_in_secrets_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path.to_str().unwrap().to_string()
        };
        let trailing = write("trailing", "pw-in-file-1\n");
        let crlf = write("crlf", "pw-in-file-2\r\n\n");
        let inner = write("inner", "pw-in\tfile-3\n");
        let escape = write("escape", "pw-in-file-4\x1b[0m");
        // (variable, value, the secret expected, the variable named in the problem)
        let cases: [(&str, &str, Option<&str>, Option<&str>); 7] = [
            ("PW_FILE", &trailing, Some("pw-in-file-1"), None),
            ("PW_FILE", &crlf, Some("pw-in-file-2"), None),
            ("PW_FILE", &inner, None, Some("PW_FILE")),
            ("PW_FILE", &escape, None, Some("PW_FILE")),
            ("PW", "direct-pw\n", None, Some("PW")),
            ("PW", "direct\x7fpw", None, Some("PW")),
            (
                "PW",
                "direct pw with spaces",
                Some("direct pw with spaces"),
                None,
            ),
        ];
        for (var, value, secret, problem) in cases {
            let mut env = reader(&[(var, value)]);
            let got = env.secret_from("PW");
            assert_eq!(
                got.as_ref().map(|(s, _)| s.expose()),
                secret,
                "{var}={value:?}"
            );
            if let Some((_, from)) = &got {
                assert_eq!(from, var);
            }
            match (problem, env.finish()) {
                (None, Ok(())) => {}
                (Some(expected), Err(err)) => {
                    assert_eq!(err.problems.len(), 1, "{err}");
                    assert_eq!(err.problems[0].var, expected);
                    let text = err.to_string();
                    assert!(text.contains("control character"), "{text}");
                    for leaked in ["pw-in", "direct"] {
                        assert!(!text.contains(leaked), "value leaked: {text}");
                    }
                }
                (expected, got) => panic!("{var}={value:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn edit_distance_counts_slips() {
        for (a, b, d) in [
            ("COMPRESSION", "COMPRESSION", 0),
            ("COMPRESION", "COMPRESSION", 1),
            ("DB_HSOT", "DB_HOST", 1),
            ("DB_HOTS", "DB_HOST", 1),
            ("STORAGE_BUKET", "STORAGE_BUCKET", 1),
            ("JOBID", "JOB_ID", 1),
            ("PGHOST", "DB_HOST", 3),
            ("", "ABC", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} / {b}");
        }
    }

    #[test]
    fn unknown_variables_are_pointed_out() {
        let mut env = reader(&[]);
        for name in [
            "DB_HOST",
            "DB_USERNAME",
            "COMPRESSION",
            "JOB_ID",
            "KUBERNETES_SERVICE_HOST",
        ] {
            env.get(name);
        }
        env.secret("DB_PASSWORD");
        // (name in the environment, the suggestion expected; "" for a warning without one)
        let expected: &[(&str, Option<&str>)] = &[
            ("COMPRESION", Some("COMPRESSION")),
            ("DB_HSOT", Some("DB_HOST")),
            ("db_host", Some("DB_HOST")),
            ("DB_HOST_FILE", Some("DB_HOST")),
            ("DB_USER", Some("DB_USERNAME")),
            ("DB_PASWORD", Some("DB_PASSWORD")),
            ("JOBID", Some("JOB_ID")),
            ("DB_SERVICE_HOST", Some("")),
            ("MYSQL_PWD", Some("")),
            // Known names, and other programs' variables, are left alone.
            ("DB_HOST", None),
            ("DB_PASSWORD", None),
            ("DB_PASSWORD_FILE", None),
            ("KUBERNETES_SERVICE_HOST", None),
            ("PGHOST", None),
            ("PGPASSWORD", None),
            ("PATH", None),
            ("HOME", None),
            ("HOSTNAME", None),
            ("PORT", None),
            ("LANG", None),
            // Read only in some configurations.
            ("STORAGE_BUCKET", None),
            ("COMPRESSION_LEVEL", None),
        ];
        let names = expected.iter().map(|(n, _)| n.to_string());
        let warnings = env.unknown_variables(names);
        for (name, suggestion) in expected {
            let found: Vec<&String> = warnings
                .iter()
                .filter(|w| w.starts_with(&format!("{name} is set")))
                .collect();
            match suggestion {
                None => assert!(found.is_empty(), "{name}: {found:?}"),
                Some("") => {
                    assert_eq!(found.len(), 1, "{name}: {warnings:#?}");
                    assert!(!found[0].contains("did you mean"), "{}", found[0]);
                }
                Some(k) => {
                    assert_eq!(found.len(), 1, "{name}: {warnings:#?}");
                    assert!(
                        found[0].ends_with(&format!("did you mean {k}?")),
                        "{}",
                        found[0]
                    );
                }
            }
        }
        assert_eq!(
            warnings.len(),
            expected.iter().filter(|(_, s)| s.is_some()).count()
        );
    }
}
