//! Redis or Valkey, their versions, and which RDB format versions each can load: the format a
//! `RESTORE` payload carries decides whether a backup fits a target.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Redis,
    Valkey,
}

impl Flavor {
    /// The product this binary's image was built for (`BACKUP_RUNNER_REDIS_FLAVOR`, default Redis).
    pub fn of_this_build() -> Flavor {
        match option_env!("BACKUP_RUNNER_REDIS_FLAVOR") {
            Some("valkey") => Flavor::Valkey,
            _ => Flavor::Redis,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Redis => "Redis",
            Flavor::Valkey => "Valkey",
        }
    }

    /// The command-line client shipped with the flavor's tools package.
    pub fn cli(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-cli",
            Flavor::Valkey => "valkey-cli",
        }
    }

    pub fn image_for(self, version: &Version) -> String {
        runner_core::checks::image_name(
            self.name(),
            &format!("{}.{}", version.major, version.minor),
        )
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// `7.0.15`, `8.1`, `9` (missing parts are 0).
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.trim().split('.').map(|p| {
            let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(Version {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A server: its flavor and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    pub flavor: Flavor,
    pub version: Version,
}

/// Valkey 9 writes format 80 and refuses 12–79, which Redis 7.4+ uses ("foreign" versions).
const VALKEY_OWN_FORMATS: u16 = 80;
const REDIS_ONLY_FORMATS: std::ops::Range<u16> = 12..80;

impl Server {
    /// From `INFO server`: Valkey 8+ reports `valkey_version` (and a `redis_version` of 7.2.4 for
    /// compatibility), Redis only `redis_version`.
    pub fn from_info(info: &str) -> Option<Server> {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
        };
        if let Some(v) = field("valkey_version") {
            return Some(Server {
                flavor: Flavor::Valkey,
                version: Version::parse(v)?,
            });
        }
        let version = Version::parse(field("redis_version")?)?;
        let flavor = match field("server_name") {
            Some(name) if name.eq_ignore_ascii_case("valkey") => Flavor::Valkey,
            _ => Flavor::Redis,
        };
        Some(Server { flavor, version })
    }

    /// `Redis 7.0.15`: the form recorded as the manifest's `server_version`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.flavor, self.version)
    }

    /// Parses [`Server::describe`]'s form back.
    pub fn from_description(text: &str) -> Option<Server> {
        let (name, version) = text.trim().split_once(' ')?;
        let flavor = match name {
            "Redis" => Flavor::Redis,
            "Valkey" => Flavor::Valkey,
            _ => return None,
        };
        Some(Server {
            flavor,
            version: Version::parse(version)?,
        })
    }

    /// The RDB format version this server writes (and the newest it reads).
    pub fn rdb_version(&self) -> u16 {
        let v = (self.version.major, self.version.minor);
        match self.flavor {
            Flavor::Valkey if v >= (9, 0) => VALKEY_OWN_FORMATS,
            // Valkey forked from Redis 7.2.4 and kept its format until 9.0.
            Flavor::Valkey => 11,
            Flavor::Redis if v >= (7, 4) => 12,
            Flavor::Redis if v >= (7, 2) => 11,
            Flavor::Redis if v >= (7, 0) => 10,
            Flavor::Redis if v >= (5, 0) => 9,
            Flavor::Redis if v >= (4, 0) => 8,
            Flavor::Redis if v >= (3, 2) => 7,
            Flavor::Redis => 6,
        }
    }

    /// The RDB format of a replication snapshot this server sends to `redis-cli --rdb`: Valkey 9
    /// sends its own format (80) only to replicas that announce their version, which the
    /// command-line clients do not, and 11 otherwise.
    pub fn snapshot_rdb_version(&self) -> u16 {
        match self.rdb_version() {
            VALKEY_OWN_FORMATS => 11,
            v => v,
        }
    }

    /// Whether this server accepts `RESTORE` payloads in RDB format `format`.
    pub fn can_load(&self, format: u16) -> bool {
        let foreign = self.flavor == Flavor::Valkey && REDIS_ONLY_FORMATS.contains(&format);
        format <= self.rdb_version() && !foreign
    }

    /// The oldest servers of each flavor that load `format`, for messages.
    pub fn loaders_of(format: u16) -> String {
        match format {
            0..=9 => "any Redis or Valkey server".into(),
            10 => "Redis 7.0 or newer, or any Valkey".into(),
            11 => "Redis 7.2 or newer, or any Valkey".into(),
            80 => "Valkey 9.0 or newer".into(),
            12..=79 => "Redis 7.4 or newer".into(),
            _ => "a newer server than this runner knows".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(flavor: Flavor, v: &str) -> Server {
        Server {
            flavor,
            version: Version::parse(v).unwrap(),
        }
    }

    #[test]
    fn reads_info_server() {
        let redis = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(
            Server::from_info(redis),
            Some(server(Flavor::Redis, "7.0.15"))
        );
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n";
        assert_eq!(
            Server::from_info(valkey),
            Some(server(Flavor::Valkey, "8.1.1"))
        );
        assert_eq!(Server::from_info("nothing"), None);
        let s = server(Flavor::Valkey, "9.1.0");
        assert_eq!(Server::from_description(&s.describe()), Some(s));
        assert_eq!(Server::from_description("7.0"), None);
    }

    #[test]
    fn which_server_loads_which_format() {
        let redis70 = server(Flavor::Redis, "7.0.15");
        let redis80 = server(Flavor::Redis, "8.0.2");
        let valkey81 = server(Flavor::Valkey, "8.1.1");
        let valkey91 = server(Flavor::Valkey, "9.1.0");
        assert_eq!(redis70.rdb_version(), 10);
        assert_eq!(redis80.rdb_version(), 12);
        assert_eq!(valkey81.rdb_version(), 11);
        assert_eq!(valkey91.rdb_version(), 80);
        assert_eq!(valkey91.snapshot_rdb_version(), 11);
        assert_eq!(redis80.snapshot_rdb_version(), 12);
        // Redis 7.0 → Valkey 8.1 works; newer → older does not.
        assert!(valkey81.can_load(redis70.rdb_version()));
        assert!(!redis70.can_load(valkey81.rdb_version()));
        assert!(!redis70.can_load(redis80.rdb_version()));
        assert!(!valkey81.can_load(valkey91.rdb_version()));
        // Valkey 9 refuses Redis 7.4+'s formats; Redis never reads Valkey 9's.
        assert!(!valkey91.can_load(redis80.rdb_version()));
        assert!(valkey91.can_load(valkey81.rdb_version()));
        assert!(!redis80.can_load(valkey91.rdb_version()));
        assert!(redis80.can_load(valkey81.rdb_version()));
    }

    #[test]
    fn names_the_image() {
        let v = Version::parse("8.1.1").unwrap();
        assert_eq!(Flavor::Valkey.image_for(&v), "backup-runner-valkey:8.1");
        assert_eq!(
            Version::parse("7"),
            Some(Version {
                major: 7,
                minor: 0,
                patch: 0
            })
        );
        assert_eq!(Version::parse("x"), None);
    }
}
