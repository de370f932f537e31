//! Ages written in configuration: `3600`, `90s`, `15m`, `26h`, `7d`, `2w`.

use std::time::Duration;

/// The longest age accepted: 100 years of 365.25 days.
const MAX_SECS: u64 = 36_525 * 86_400;

const ACCEPTED: &str = "give seconds (3600) or a number with s, m, h, d or w (90s, 26h, 7d)";

/// Parses a non-negative age: plain seconds (`3600`), or a number with one unit suffix:
/// `s`, `m` (minutes), `h`, `d`, `w` (weeks). Whitespace around is trimmed; the unit is
/// case-insensitive. Errors are a short English sentence saying what is accepted,
/// e.g. "\"3x\" is not an age: give seconds (3600) or a number with s, m, h, d or w (90s, 26h, 7d)".
/// Rejects empty, negative, fractional, overflow (> 100 years), and compound forms like `1h30m`.
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("an empty value is not an age: {ACCEPTED}"));
    }
    let not_an_age = || format!("{s:?} is not an age: {ACCEPTED}");
    if s.starts_with('-') {
        return Err(format!(
            "{s:?} is not an age: it cannot be negative; {ACCEPTED}"
        ));
    }

    let (number, unit_secs) = match s.char_indices().last() {
        Some((i, c)) if !c.is_ascii_digit() => {
            let unit_secs = match c.to_ascii_lowercase() {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(not_an_age()),
            };
            (&s[..i], unit_secs)
        }
        _ => (s, 1),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_an_age());
    }

    let too_long = || format!("{s:?} is too long an age: at most 100 years (36525d)");
    // Digits only, so the only possible error is overflow.
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .ok_or_else(too_long)?;
    if secs > MAX_SECS {
        return Err(too_long());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let table: &[(&str, u64)] = &[
            ("0", 0),
            ("3600", 3_600),
            ("007", 7),
            ("90s", 90),
            ("90S", 90),
            ("15m", 900),
            ("15M", 900),
            ("26h", 93_600),
            ("26H", 93_600),
            ("7d", 604_800),
            ("7D", 604_800),
            ("2w", 1_209_600),
            ("2W", 1_209_600),
            ("0d", 0),
            ("  7d\t", 604_800),
            ("\n3600 ", 3_600),
            ("36525d", 3_155_760_000),
            ("3155760000", 3_155_760_000),
            ("5217w", 3_155_241_600),
        ];
        for &(input, secs) in table {
            assert_eq!(
                parse_age(input),
                Ok(Duration::from_secs(secs)),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn rejected() {
        let accepted = "give seconds (3600) or a number with s, m, h, d or w (90s, 26h, 7d)";
        let table: &[(&str, &str)] = &[
            ("", "an empty value is not an age"),
            ("   ", "an empty value is not an age"),
            ("3x", "\"3x\" is not an age"),
            (" 3x ", "\"3x\" is not an age"),
            ("d", "\"d\" is not an age"),
            ("h7", "\"h7\" is not an age"),
            ("-5", "\"-5\" is not an age: it cannot be negative"),
            ("-5m", "\"-5m\" is not an age: it cannot be negative"),
            ("+5m", "\"+5m\" is not an age"),
            ("1.5h", "\"1.5h\" is not an age"),
            ("1,5h", "\"1,5h\" is not an age"),
            ("1h30m", "\"1h30m\" is not an age"),
            ("1h 30m", "\"1h 30m\" is not an age"),
            ("7 d", "\"7 d\" is not an age"),
            ("7dd", "\"7dd\" is not an age"),
            ("7days", "\"7days\" is not an age"),
            ("1y", "\"1y\" is not an age"),
            ("5ms", "\"5ms\" is not an age"),
            ("٣d", "\"٣d\" is not an age"),
            ("7é", "\"7é\" is not an age"),
            ("36526d", "\"36526d\" is too long an age: at most 100 years"),
            ("3155760001", "\"3155760001\" is too long an age"),
            ("5218w", "\"5218w\" is too long an age"),
            ("99999999999999999999", "is too long an age"),
            ("30500568904944w", "is too long an age"),
        ];
        for &(input, start) in table {
            let err = parse_age(input).expect_err(input);
            assert!(err.contains(start), "input {input:?}: {err}");
            if !err.contains("too long") {
                assert!(err.ends_with(accepted), "input {input:?}: {err}");
            }
        }
    }
}
