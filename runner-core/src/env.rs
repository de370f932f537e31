//! Reading configuration from environment variables while collecting every problem, so a bad
//! config is reported at once, in one message, before anything connects.

use std::fmt;
use std::str::FromStr;

use crate::secret::Secret;

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
}

impl<'a> EnvReader<'a> {
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        EnvReader {
            lookup: Box::new(lookup),
            problems: Vec::new(),
        }
    }

    pub fn from_process_env() -> EnvReader<'static> {
        EnvReader::new(|name| std::env::var(name).ok())
    }

    /// The value of `name`; an empty or blank value counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
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
    /// Kubernetes secrets convention). The value itself never appears in a problem message.
    pub fn secret(&mut self, name: &str) -> Option<Secret> {
        let file_var = format!("{name}_FILE");
        let direct = (self.lookup)(name).filter(|v| !v.is_empty());
        let file = self.string(&file_var);
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problem(
                    name,
                    format!("is set together with {file_var}: set only one of them"),
                );
                None
            }
            (Some(v), None) => Some(Secret::new(v)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(contents) => {
                    let value = contents.trim_end_matches(['\r', '\n']).to_string();
                    if value.is_empty() {
                        self.problem(&file_var, format!("file {path:?} is empty"));
                        None
                    } else {
                        Some(Secret::new(value))
                    }
                }
                Err(e) => {
                    self.problem(&file_var, format!("cannot read file {path:?}: {e}"));
                    None
                }
            },
            (None, None) => None,
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
}
