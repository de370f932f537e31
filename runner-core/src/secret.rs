//! Secrets: a wrapper that never prints, and a process-wide redactor that scrubs every known
//! secret from text that leaves the process (logs, callbacks, error messages, tool stderr).

use std::fmt;
use std::sync::{OnceLock, RwLock};

/// A secret value. `Debug` and `Display` never show it; use [`Secret::expose`] where the value
/// must be handed to a tool (a 0600 file or a child's environment, never argv).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value and registers it with the redactor.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

const MASK: &str = "***";
/// Shorter values would redact ordinary words; they are still never logged on purpose.
const MIN_REDACTED_LEN: usize = 3;

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Registers a value (and its percent-encoded form, as it appears inside URLs) for redaction.
pub fn register(value: &str) {
    if value.len() < MIN_REDACTED_LEN {
        return;
    }
    let mut forms = vec![value.to_string()];
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    if encoded != value {
        forms.push(encoded.replace('+', "%20"));
        forms.push(encoded);
    }
    let mut secrets = registry().write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // Longest first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Returns `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> String {
    let secrets = registry().read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn redact_masks_plain_and_url_encoded_forms() {
        Secret::new("p@ss:w/rd 42");
        let text = "FATAL: password p@ss:w/rd 42 in postgres://u:p%40ss%3Aw%2Frd%2042@h/db";
        let out = redact(text);
        assert!(!out.contains("p@ss:w/rd 42"), "{out}");
        assert!(!out.contains("p%40ss%3Aw%2Frd%2042"), "{out}");
        assert!(out.contains("***"));
    }
}
