//! Client-side encryption with age (the format of the `age` and `rage` tools): the backup is
//! encrypted in the stream after compression, so the store never sees a plaintext byte, and
//! decrypted in the stream before decompression on restore and verify.
//!
//! A backup needs only public keys (`ENCRYPTION_RECIPIENTS`), so the job that talks to the
//! database never holds a key that can decrypt; or a passphrase (age's scrypt recipient).
//! Restore and verify read an identity file (several keys allowed, for rotation) or the
//! passphrase. Nothing secret is logged, put on argv or written to the manifest; the manifest
//! records the scheme and the recipients' public keys.

use std::io::{self, Write};
use std::str::FromStr;

use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, BufReader};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::error::Error;
use crate::secret::Secret;

pub const SCHEME: &str = "age";

/// How a backup is encrypted (`ENCRYPTION_RECIPIENTS[_FILE]` or `ENCRYPTION_PASSPHRASE[_FILE]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Encryption {
    /// X25519 public keys (`age1…`), validated.
    Recipients(Vec<String>),
    Passphrase(Secret),
}

/// What restore and verify can decrypt with (`ENCRYPTION_IDENTITY_FILE`,
/// `ENCRYPTION_PASSPHRASE[_FILE]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keys {
    /// The identity file's content (validated), kept secret.
    identities: Option<Secret>,
    /// The public keys of those identities, for messages.
    pub public: Vec<String>,
    passphrase: Option<Secret>,
}

/// What the manifest records: public information only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    pub scheme: String,
    /// `x25519` (public keys) or `scrypt` (a passphrase).
    pub kind: String,
    /// The recipients' public keys; empty for a passphrase.
    #[serde(default)]
    pub recipients: Vec<String>,
}

impl EncryptionInfo {
    /// Who can decrypt, for messages.
    pub fn describe(&self) -> String {
        match self.kind.as_str() {
            "scrypt" => "a passphrase (ENCRYPTION_PASSPHRASE)".into(),
            _ => format!("the recipients {}", self.recipients.join(", ")),
        }
    }
}

/// Parses public keys separated by commas, whitespace or line breaks (`#` starts a comment
/// line, as in age recipient files). Only X25519 recipients (`age1…`) are accepted.
pub fn parse_recipients(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        for item in line.split([',', ' ', '\t']).filter(|s| !s.is_empty()) {
            match age::x25519::Recipient::from_str(item) {
                Ok(r) => {
                    let key = r.to_string();
                    if !out.contains(&key) {
                        out.push(key);
                    }
                }
                Err(_) => {
                    let shown: String = item.chars().take(12).collect();
                    return Err(if item.starts_with("AGE-SECRET-KEY-") {
                        "holds a secret key (AGE-SECRET-KEY-…), not a public key: give the backup only the public key (age1…, from `age-keygen -y`), and keep the identity for restores".into()
                    } else {
                        format!("{shown:?}… is not an age X25519 public key: expected age1… as `age-keygen` prints it (SSH and plugin recipients are not supported)")
                    });
                }
            }
        }
    }
    if out.is_empty() {
        return Err("holds no public key: expected one or more age1… keys".into());
    }
    Ok(out)
}

/// Parses an age identity file: one `AGE-SECRET-KEY-1…` per line, `#` comments and blank lines
/// allowed. Returns the public keys. Errors never show the file's content.
pub fn parse_identities(text: &str) -> Result<Vec<String>, String> {
    let mut public = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match age::x25519::Identity::from_str(line) {
            Ok(identity) => public.push(identity.to_public().to_string()),
            Err(_) => {
                return Err(if line.starts_with("age1") {
                    format!("line {} is a public key (age1…), not an identity: restores need the secret key file `age-keygen` wrote (AGE-SECRET-KEY-1…)", n + 1)
                } else {
                    format!("line {} is not an age X25519 identity (AGE-SECRET-KEY-1…); plugin and SSH identities are not supported", n + 1)
                })
            }
        }
    }
    if public.is_empty() {
        return Err("holds no identity: expected AGE-SECRET-KEY-1… lines".into());
    }
    Ok(public)
}

impl Keys {
    pub fn new(identities: Option<Secret>, passphrase: Option<Secret>) -> Result<Keys, String> {
        let public = match &identities {
            Some(text) => parse_identities(text.expose())?,
            None => Vec::new(),
        };
        Ok(Keys {
            identities,
            public,
            passphrase,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_none() && self.passphrase.is_none()
    }

    fn identities(&self) -> Vec<Box<dyn age::Identity>> {
        let mut out: Vec<Box<dyn age::Identity>> = Vec::new();
        if let Some(text) = &self.identities {
            for line in text.expose().lines().map(str::trim) {
                if let Ok(i) = age::x25519::Identity::from_str(line) {
                    out.push(Box::new(i));
                }
            }
        }
        if let Some(p) = &self.passphrase {
            out.push(Box::new(age::scrypt::Identity::new(SecretString::from(
                p.expose().to_string(),
            ))));
        }
        out
    }

    fn describe(&self) -> String {
        match (self.public.is_empty(), &self.passphrase) {
            (false, Some(_)) => format!(
                "the identities for {} (ENCRYPTION_IDENTITY_FILE) and ENCRYPTION_PASSPHRASE",
                self.public.join(", ")
            ),
            (false, None) => format!(
                "the identities for {} (ENCRYPTION_IDENTITY_FILE)",
                self.public.join(", ")
            ),
            (true, Some(_)) => "ENCRYPTION_PASSPHRASE".into(),
            (true, None) => "no key".into(),
        }
    }
}

impl Encryption {
    pub fn info(&self) -> EncryptionInfo {
        match self {
            Encryption::Recipients(r) => EncryptionInfo {
                scheme: SCHEME.into(),
                kind: "x25519".into(),
                recipients: r.clone(),
            },
            Encryption::Passphrase(_) => EncryptionInfo {
                scheme: SCHEME.into(),
                kind: "scrypt".into(),
                recipients: Vec::new(),
            },
        }
    }

    /// The encryptor for one backup (a fresh file key each time).
    pub fn encryptor(&self) -> Result<age::Encryptor, Error> {
        match self {
            Encryption::Passphrase(p) => Ok(age::Encryptor::with_user_passphrase(
                SecretString::from(p.expose().to_string()),
            )),
            Encryption::Recipients(keys) => {
                let parsed = keys
                    .iter()
                    .map(|k| age::x25519::Recipient::from_str(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Internal(format!("a validated recipient: {e}")))?;
                age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| Error::Internal(format!("cannot set up encryption: {e}")))
            }
        }
    }
}

/// The error for a backup that needs a key the job was not given: a configuration problem,
/// reported before anything connects to the database.
pub fn missing_key(info: &EncryptionInfo, location: &str) -> Error {
    let var = if info.kind == "scrypt" {
        "ENCRYPTION_PASSPHRASE"
    } else {
        "ENCRYPTION_IDENTITY_FILE"
    };
    Error::Config(crate::env::ConfigError {
        problems: vec![crate::env::Problem {
            var: var.into(),
            message: format!(
                "the backup at {location} is encrypted with age for {}: set {var} to a key it was made for; nothing was touched",
                info.describe()
            ),
        }],
    })
}

/// The plaintext of an encrypted object: reads the age header (so a key that does not match
/// fails here, before anything downstream starts), then decrypts as it is read.
pub async fn decrypting<R>(
    input: R,
    info: &EncryptionInfo,
    keys: &Keys,
    location: &str,
) -> Result<Decrypted<R>, Error>
where
    R: AsyncBufRead + Unpin + Send + 'static,
{
    if keys.is_empty() {
        return Err(missing_key(info, location));
    }
    let decryptor = age::Decryptor::new_async_buffered(input.compat())
        .await
        .map_err(|e| header_error(e, location))?;
    let identities = keys.identities();
    let reader = decryptor
        .decrypt_async(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys
            | age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed => Error::Integrity(format!(
                "the key does not match: {location} is encrypted for {}, and {} cannot open it; nothing was read into the target",
                info.describe(),
                keys.describe()
            )),
            other => header_error(other, location),
        })?;
    Ok(BufReader::with_capacity(64 << 10, reader.compat()))
}

fn header_error(e: age::DecryptError, location: &str) -> Error {
    match e {
        age::DecryptError::Io(io) => Error::storage(&format!("reading {location} failed"), io),
        other => Error::Integrity(format!(
            "{location} is not a readable age file ({other}): the object is damaged"
        )),
    }
}

type AgeReader<R> = Compat<age::stream::StreamReader<Compat<R>>>;

/// Plaintext read from an age object.
pub type Decrypted<R> = BufReader<AgeReader<R>>;

/// Where the compressor thread writes: straight through, or through age's stream encryption.
pub(crate) enum Sink<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sink<W> {
    pub(crate) fn new(output: W, encryptor: Option<age::Encryptor>) -> io::Result<Sink<W>> {
        Ok(match encryptor {
            None => Sink::Plain(output),
            Some(e) => Sink::Age(e.wrap_output(output)?),
        })
    }

    pub(crate) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.write_all(data),
            Sink::Age(w) => w.write_all(data),
        }
    }

    /// Writes what encryption still holds (the last chunk and its tag) and returns the output.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Age(w) => w.finish(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A new X25519 key pair: the public key and the identity.
    pub(crate) fn keypair() -> (String, String) {
        let identity = age::x25519::Identity::generate();
        (
            identity.to_public().to_string(),
            age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_string(),
        )
    }

    #[test]
    fn recipients_are_separated_by_commas_spaces_or_lines() {
        let (a, _) = keypair();
        let (b, secret) = keypair();
        let parsed = parse_recipients(&format!("# team keys\n{a}, {b}\n{a}\n")).unwrap();
        assert_eq!(parsed, [a.clone(), b]);
        let err = parse_recipients(&secret).unwrap_err();
        assert!(err.contains("secret key"), "{err}");
        assert!(
            !err.contains(&secret[15..]),
            "the secret is not echoed: {err}"
        );
        assert!(parse_recipients("ssh-ed25519 AAAA")
            .unwrap_err()
            .contains("not an age"));
        assert!(parse_recipients(" \n# only a comment\n").is_err());
    }

    #[test]
    fn identity_files_hold_several_keys_and_never_echo_them() {
        let (pa, sa) = keypair();
        let (pb, sb) = keypair();
        let text = format!("# created: today\n# public key: {pa}\n{sa}\n\n{sb}\n");
        assert_eq!(parse_identities(&text).unwrap(), [pa.clone(), pb]);
        let err = parse_identities(&format!("{sa}\nnot-a-key\n")).unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains(&sa), "{err}");
        assert!(parse_identities(&pa).unwrap_err().contains("public key"));
    }

    async fn encrypt(plain: &[u8], encryption: &Encryption) -> Vec<u8> {
        let mut sink = Sink::new(Vec::new(), Some(encryption.encryptor().unwrap())).unwrap();
        sink.write_all(plain).unwrap();
        sink.finish().unwrap()
    }

    async fn decrypt(
        cipher: Vec<u8>,
        keys: &Keys,
        info: &EncryptionInfo,
    ) -> Result<Vec<u8>, Error> {
        let mut plain = decrypting(std::io::Cursor::new(cipher), info, keys, "test").await?;
        let mut out = Vec::new();
        plain
            .read_to_end(&mut out)
            .await
            .map_err(|e| Error::Integrity(e.to_string()))?;
        Ok(out)
    }

    #[tokio::test]
    async fn round_trips_for_each_recipient_and_names_a_wrong_key() {
        let (pa, sa) = keypair();
        let (pb, sb) = keypair();
        let (_, other) = keypair();
        let plain: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let encryption = Encryption::Recipients(vec![pa.clone(), pb.clone()]);
        let info = encryption.info();
        let cipher = encrypt(&plain, &encryption).await;
        assert!(!cipher.windows(16).any(|w| w == &plain[1000..1016]));
        for secret in [&sa, &sb] {
            let keys = Keys::new(Some(Secret::new(secret.clone())), None).unwrap();
            assert_eq!(decrypt(cipher.clone(), &keys, &info).await.unwrap(), plain);
        }
        let wrong = Keys::new(Some(Secret::new(other)), None).unwrap();
        let err = decrypt(cipher.clone(), &wrong, &info).await.unwrap_err();
        assert!(matches!(err, Error::Integrity(_)), "{err}");
        assert!(err.to_string().contains("the key does not match"), "{err}");
        assert!(err.to_string().contains(&pa), "{err}");
        let none = decrypt(cipher, &Keys::default(), &info).await.unwrap_err();
        assert!(matches!(none, Error::Config(_)), "{none}");
    }

    #[tokio::test]
    async fn a_passphrase_round_trips_and_a_wrong_one_is_named() {
        let encryption = Encryption::Passphrase(Secret::new("correct horse battery"));
        let info = encryption.info();
        let cipher = encrypt(b"some data", &encryption).await;
        let keys = Keys::new(None, Some(Secret::new("correct horse battery"))).unwrap();
        assert_eq!(
            decrypt(cipher.clone(), &keys, &info).await.unwrap(),
            b"some data"
        );
        let wrong = Keys::new(None, Some(Secret::new("wrong horse"))).unwrap();
        let err = decrypt(cipher, &wrong, &info).await.unwrap_err();
        assert!(err.to_string().contains("the key does not match"), "{err}");
    }
}
