//! MySQL and MariaDB: the same protocol and dump format, different tools, options and pitfalls.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Mysql,
    Mariadb,
}

impl Flavor {
    /// The flavor this binary was built for, else the one whose tools are installed.
    pub fn of_this_build() -> Flavor {
        match option_env!("BACKUP_RUNNER_MYSQL_FLAVOR") {
            Some("mariadb") => Flavor::Mariadb,
            Some(_) => Flavor::Mysql,
            None if on_path("mariadb-dump") => Flavor::Mariadb,
            None => Flavor::Mysql,
        }
    }

    /// From `SELECT VERSION()`: MariaDB says so (`11.8.3-MariaDB-1 from Debian`).
    pub fn of_server(version: &str) -> Flavor {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::Mariadb
        } else {
            Flavor::Mysql
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Mysql => "mysql",
            Flavor::Mariadb => "mariadb",
        }
    }

    pub fn dump_tool(self) -> &'static str {
        match self {
            Flavor::Mysql => "mysqldump",
            Flavor::Mariadb => "mariadb-dump",
        }
    }

    pub fn client_tool(self) -> &'static str {
        match self {
            Flavor::Mysql => "mysql",
            Flavor::Mariadb => "mariadb",
        }
    }

    /// The image for a server of this flavor and version.
    pub fn image_for(self, version: (u32, u32)) -> String {
        runner_core::checks::image_name(self.name(), &format!("{}.{}", version.0, version.1))
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Mysql => "MySQL",
            Flavor::Mariadb => "MariaDB",
        })
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// `(major, minor)` from the start of a version string: `11.8.3-MariaDB` → (11, 8).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The server version a dump tool belongs to, from its `--version` line:
/// `mariadb-dump from 11.8.3-MariaDB, client 10.19 for debian-linux-gnu (x86_64)` → `11.8.3-MariaDB`;
/// `mysqldump  Ver 9.7.0 for Linux on x86_64 (MySQL Community Server - GPL)` → `9.7.0`.
pub fn parse_tool_version(output: &str) -> Option<String> {
    let words: Vec<&str> = output.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .map(|w| w.trim_end_matches(',').to_string())
    };
    // Older MariaDB tools: `mysqldump  Ver 10.19 Distrib 10.11.6-MariaDB, for debian-linux-gnu`.
    after("from")
        .or_else(|| after("Distrib"))
        .or_else(|| after("Ver"))
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_tool_version(
                "mariadb-dump from 11.8.3-MariaDB, client 10.19 for debian-linux-gnu (x86_64)"
            )
            .as_deref(),
            Some("11.8.3-MariaDB")
        );
        assert_eq!(
            parse_tool_version(
                "mysqldump  Ver 9.7.0 for Linux on x86_64 (MySQL Community Server - GPL)"
            )
            .as_deref(),
            Some("9.7.0")
        );
        assert_eq!(
            parse_tool_version(
                "mysqldump  Ver 10.19 Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)"
            )
            .as_deref(),
            Some("10.11.6-MariaDB")
        );
        assert_eq!(major_minor("11.8.3-MariaDB-1 from Debian"), Some((11, 8)));
        assert_eq!(major_minor("9.7.0"), Some((9, 7)));
        assert_eq!(
            Flavor::of_server("10.11.14-MariaDB-0+deb12u2"),
            Flavor::Mariadb
        );
        assert_eq!(Flavor::of_server("9.7.0"), Flavor::Mysql);
        assert_eq!(
            Flavor::Mariadb.image_for((11, 8)),
            "backup-runner-mariadb:11.8"
        );
    }
}
