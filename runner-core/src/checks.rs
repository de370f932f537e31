//! Checks every engine needs, made once here so that every engine behaves the same: the image's
//! tools are the release it was built for, a backup is this engine's and in a format it
//! restores, and the name of the image to use.

use crate::engine::{Engine, ServerInfo};
use crate::error::Error;
use crate::manifest::Manifest;

/// The image users run for a product (`postgres`, `mariadb`, `valkey`) and a server release
/// (`17`, `11.8`).
pub fn image_name(product: &str, release: &str) -> String {
    format!("backup-runner-{}:{release}", product.to_ascii_lowercase())
}

/// The release a version string belongs to: the first `parts` numbers of its first word that
/// starts with a digit (`"pg_dump (PostgreSQL) 17.2"`, 1 → `17`; `"redis-cli 7.0.15"`, 2 →
/// `7.0`). A missing minor number counts as 0.
pub fn release_of(version: &str, parts: usize) -> Option<String> {
    let word = version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    let mut numbers = word
        .split(|c: char| !c.is_ascii_digit())
        .take_while(|n| !n.is_empty())
        .map(|n| n.parse::<u64>().ok());
    let mut release = Vec::with_capacity(parts);
    for i in 0..parts {
        match numbers.next().flatten() {
            Some(n) => release.push(n.to_string()),
            None if i > 0 => release.push("0".into()),
            None => return None,
        }
    }
    Some(release.join("."))
}

/// Refuses an image whose client tools are not the release it was built for (a broken
/// build); a development build (`built_for` unset) follows whatever tools it finds.
pub fn check_built_for<E: Engine>(server: &ServerInfo) -> Result<(), Error> {
    let info = E::info();
    let Some(built) = info.built_for else {
        return Ok(());
    };
    let parts = E::RELEASE_PARTS;
    if release_of(&server.client_version, parts) == release_of(built, parts) {
        return Ok(());
    }
    Err(Error::Incompatible(format!(
        "this image was built for {} {built} but its client tools are {}: rebuild the image",
        info.display_name, server.client_version
    )))
}

/// Refuses a backup made by another engine, or in a format this engine does not restore,
/// before anything reads the object or touches the target.
pub fn check_backup<E: Engine>(location: &str, manifest: &Manifest) -> Result<(), Error> {
    let info = E::info();
    if manifest.engine != info.name {
        return Err(Error::Incompatible(format!(
            "{location} holds a {} backup; use the backup-runner-{} image",
            manifest.engine, manifest.engine
        )));
    }
    if !E::accepts_format(&manifest.format) {
        return Err(Error::Incompatible(format!(
            "{location} is in format {:?}, which this runner's {} engine does not restore: it was not made by this runner",
            manifest.format, info.display_name
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_from_tool_and_server_versions() {
        let cases: &[(&str, usize, Option<&str>)] = &[
            ("17.2", 1, Some("17")),
            ("pg_dump (PostgreSQL) 17.2 (Debian 17.2-1)", 1, Some("17")),
            ("16beta2", 1, Some("16")),
            ("11.8.3-MariaDB", 2, Some("11.8")),
            ("redis-cli 7.0.15", 2, Some("7.0")),
            ("valkey-cli 9.1.2", 2, Some("9.1")),
            ("9", 2, Some("9.0")),
            ("runner's own client", 2, None),
            ("", 1, None),
        ];
        for (version, parts, release) in cases {
            assert_eq!(
                release_of(version, *parts).as_deref(),
                *release,
                "{version} ({parts})"
            );
        }
    }

    #[test]
    fn image_names() {
        assert_eq!(image_name("postgres", "17"), "backup-runner-postgres:17");
        assert_eq!(image_name("Valkey", "9.1"), "backup-runner-valkey:9.1");
    }
}
