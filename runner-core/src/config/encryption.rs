//! Encryption settings: `ENCRYPTION_RECIPIENTS[_FILE]` or `ENCRYPTION_PASSPHRASE[_FILE]` for a
//! backup, `ENCRYPTION_IDENTITY_FILE` or the passphrase for restore and verify. Every problem is
//! found here, before the dump starts: a backup configured for encryption never uploads a
//! plaintext byte.

use super::Operation;
use crate::crypto::{parse_recipients, Encryption, Keys};
use crate::env::{read_secret_file, EnvReader};
use crate::secret::Secret;

pub(super) fn read_encryption(
    env: &mut EnvReader<'_>,
    operation: Option<Operation>,
) -> (Option<Encryption>, Keys) {
    let recipients = read_recipients(env);
    let passphrase = env.secret("ENCRYPTION_PASSPHRASE");
    let identities = read_identity_file(env);
    if recipients.is_some() && passphrase.is_some() && operation == Some(Operation::Backup) {
        env.problem(
            "ENCRYPTION_PASSPHRASE",
            "is set together with ENCRYPTION_RECIPIENTS: encrypt either to public keys or with a passphrase, not both",
        );
    }
    let encryption = match (recipients, &passphrase) {
        (Some(r), _) => Some(Encryption::Recipients(r)),
        (None, Some(p)) => Some(Encryption::Passphrase(p.clone())),
        (None, None) => None,
    };
    if operation == Some(Operation::Backup) && identities.is_some() && encryption.is_none() {
        env.problem(
            "ENCRYPTION_IDENTITY_FILE",
            "is for restore and verify; a backup encrypts to public keys: set ENCRYPTION_RECIPIENTS to the identity's public key (age-keygen -y) and keep the identity out of the backup job",
        );
    }
    let keys = match Keys::new(identities, passphrase) {
        Ok(keys) => keys,
        Err(e) => {
            env.problem("ENCRYPTION_IDENTITY_FILE", e);
            Keys::default()
        }
    };
    (encryption, keys)
}

fn read_recipients(env: &mut EnvReader<'_>) -> Option<Vec<String>> {
    let direct = env.string("ENCRYPTION_RECIPIENTS");
    let file = env.string("ENCRYPTION_RECIPIENTS_FILE");
    let (var, text) = match (direct, file) {
        (Some(_), Some(_)) => {
            env.problem(
                "ENCRYPTION_RECIPIENTS",
                "is set together with ENCRYPTION_RECIPIENTS_FILE: set only one of them",
            );
            return None;
        }
        (Some(text), None) => ("ENCRYPTION_RECIPIENTS", text),
        (None, Some(path)) => match read_secret_file(&path) {
            Ok(text) => ("ENCRYPTION_RECIPIENTS_FILE", text),
            Err(e) => {
                env.problem("ENCRYPTION_RECIPIENTS_FILE", e);
                return None;
            }
        },
        (None, None) => return None,
    };
    match parse_recipients(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            env.problem(var, e);
            None
        }
    }
}

fn read_identity_file(env: &mut EnvReader<'_>) -> Option<Secret> {
    let path = env.string("ENCRYPTION_IDENTITY_FILE")?;
    match read_secret_file(&path) {
        Ok(text) => {
            // Each key on its own is a secret too, wherever it might be quoted.
            for line in text.lines().map(str::trim) {
                if line.starts_with("AGE-SECRET-KEY-") {
                    crate::secret::register(line);
                }
            }
            Some(Secret::new(text))
        }
        Err(e) => {
            env.problem("ENCRYPTION_IDENTITY_FILE", e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{load, problem_vars};
    use crate::crypto::tests::keypair;

    fn backup<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut v = vec![("DB_HOST", "db"), ("DB_NAME", "app")];
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn a_backup_encrypts_to_recipients_or_a_passphrase_not_both() {
        let (a, _) = keypair();
        let (b, _) = keypair();
        let list = format!("{a},{b}");
        let cfg = load(&backup(&[("ENCRYPTION_RECIPIENTS", &list)])).unwrap();
        assert_eq!(
            cfg.encryption,
            Some(crate::crypto::Encryption::Recipients(vec![a.clone(), b]))
        );
        let cfg = load(&backup(&[("ENCRYPTION_PASSPHRASE", "long passphrase")])).unwrap();
        assert!(matches!(
            cfg.encryption,
            Some(crate::crypto::Encryption::Passphrase(_))
        ));
        assert_eq!(
            problem_vars(&backup(&[
                ("ENCRYPTION_RECIPIENTS", &a),
                ("ENCRYPTION_PASSPHRASE", "p4ss")
            ])),
            ["ENCRYPTION_PASSPHRASE"]
        );
        assert_eq!(
            problem_vars(&backup(&[("ENCRYPTION_RECIPIENTS", "age1nope")])),
            ["ENCRYPTION_RECIPIENTS"]
        );
    }

    #[test]
    fn file_variants_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, secret) = keypair();
        let recipients = dir.path().join("recipients.txt");
        std::fs::write(&recipients, format!("# ops\n{a}\n")).unwrap();
        let identity = dir.path().join("key.txt");
        std::fs::write(&identity, format!("# public key: {a}\n{secret}\n")).unwrap();
        let r = recipients.to_str().unwrap();
        let i = identity.to_str().unwrap();

        let cfg = load(&backup(&[("ENCRYPTION_RECIPIENTS_FILE", r)])).unwrap();
        assert_eq!(
            cfg.encryption,
            Some(crate::crypto::Encryption::Recipients(vec![a.clone()]))
        );
        assert_eq!(
            problem_vars(&backup(&[
                ("ENCRYPTION_RECIPIENTS_FILE", r),
                ("ENCRYPTION_RECIPIENTS", &a)
            ])),
            ["ENCRYPTION_RECIPIENTS"]
        );
        let cfg = load(&[
            ("OPERATION_TYPE", "verify"),
            ("BACKUP_PATH", "x.zst"),
            ("ENCRYPTION_IDENTITY_FILE", i),
        ])
        .unwrap();
        assert_eq!(cfg.keys.public, std::slice::from_ref(&a));
        // The backup job has no use for a key that decrypts.
        assert_eq!(
            problem_vars(&backup(&[("ENCRYPTION_IDENTITY_FILE", i)])),
            ["ENCRYPTION_IDENTITY_FILE"]
        );
        // A recipients file given as the identity: named, not echoed.
        let err = load(&[
            ("OPERATION_TYPE", "restore"),
            ("DB_HOST", "db"),
            ("DB_NAME", "app"),
            ("BACKUP_PATH", "x.zst"),
            ("ENCRYPTION_IDENTITY_FILE", r),
        ])
        .unwrap_err();
        assert_eq!(err.problems[0].var, "ENCRYPTION_IDENTITY_FILE");
        assert!(err.problems[0].message.contains("public key"), "{err}");
        assert!(!load(&[
            ("OPERATION_TYPE", "verify"),
            ("BACKUP_PATH", "x.zst"),
            ("ENCRYPTION_IDENTITY_FILE", "/nonexistent/key.txt"),
        ])
        .unwrap_err()
        .to_string()
        .contains(&secret));
    }
}
