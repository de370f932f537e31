//! PostgreSQL versions: parsing what the server and the tools report, and deciding what fits.

/// The major version from `server_version_num` (170006 → 17; 90624 → 9).
pub fn major_from_num(num: u32) -> u32 {
    num / 10_000
}

/// The version from a tool's `--version` line: `pg_dump (PostgreSQL) 17.6 (Debian 17.6-1)`.
pub fn parse_tool_version(output: &str) -> Option<String> {
    let rest = output.split("(PostgreSQL)").nth(1)?;
    let version = rest.split_whitespace().next()?;
    version
        .chars()
        .next()
        .filter(|c| c.is_ascii_digit())
        .map(|_| version.to_string())
}

/// The major version of a `17.6`, `18beta1` or `9.6.24` version string.
pub fn major_of(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_versions() {
        assert_eq!(
            parse_tool_version("pg_dump (PostgreSQL) 17.6 (Debian 17.6-1)\n").as_deref(),
            Some("17.6")
        );
        assert_eq!(
            parse_tool_version("pg_restore (PostgreSQL) 18beta1").as_deref(),
            Some("18beta1")
        );
        assert_eq!(parse_tool_version("something else"), None);
    }

    #[test]
    fn majors() {
        assert_eq!(major_from_num(170006), 17);
        assert_eq!(major_from_num(150018), 15);
        assert_eq!(major_from_num(90624), 9);
        assert_eq!(major_of("18beta1"), Some(18));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(major_of("x"), None);
    }
}
