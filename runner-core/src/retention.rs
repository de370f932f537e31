//! Which backups to keep: restic's `forget` policy (`internal/data/snapshot_policy.go`,
//! `ApplyPolicy`) as pure logic over `(item, taken_at)` pairs. Nothing here lists, reads or
//! deletes anything, nor looks at the clock.
//!
//! The algorithm, as in restic: the backups are sorted newest first, then walked once. Every
//! count rule (`keep_last`, `keep_hourly`, … `keep_yearly`) has a counter and the last bucket
//! value it kept. A backup is kept by a rule when the rule still has count left and the
//! backup's bucket differs from the last bucket the rule kept; the counter then goes down by
//! one. So each rule keeps the newest backup of each of its N newest buckets, and buckets with
//! no backup (a missing day, say) are not counted: the rule reaches further back instead.
//! Buckets are calendar values in UTC: hourly `Y-M-D H`, daily `Y-M-D`, weekly ISO year and
//! ISO week (2027-01-02 is in 2026-W53), monthly `Y-M`, yearly `Y`; `keep_last`'s bucket is
//! the position, so it keeps the N newest backups.
//!
//! Like current restic (since 0.16, restic issue #3624), a count rule that still has count left
//! when it reaches the OLDEST backup also keeps that backup, even when its bucket was already
//! kept, so that the history kept reaches as far back as possible while counts are left. The
//! reason's label then ends in ` (oldest)` (restic says "oldest daily snapshot"), e.g.
//! `Reason::Daily("2024-03-10 (oldest)")`.
//!
//! Where this differs from restic, on purpose:
//! - The newest backup is always kept, whatever the policy. With an unset policy (see
//!   [`Policy::is_set`]) that is the only one kept; restic's `ApplyPolicy` would then remove
//!   everything and its CLI refuses to run ("no policy was specified"). Callers should do as
//!   restic's CLI does and not prune at all when the policy is not set.
//! - `keep_within` keeps `taken_at >= newest - keep_within` (inclusive); restic keeps those
//!   strictly after, and counts its `1y2m3d4h` durations in calendar units of the local zone.
//!   Ours is an exact duration.
//! - "The newest" is the newest backup in the list. restic ignores snapshots dated in the
//!   future when looking for it; this module has no clock.
//! - Buckets are always UTC; restic uses each snapshot's own recorded time zone.
//! - Counts are `u32`: no `-1` for "unlimited", no tag rules, no `--keep-within-daily` and
//!   friends.

use std::cmp::Reverse;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// A retention policy; a backup is kept when any rule keeps it. `None` = rule not set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// RETENTION_DAYS: keep every backup taken within this long before the NEWEST backup
    /// (restic's --keep-within: relative to the newest backup, not to now, so backups that
    /// stopped are never all aged out).
    pub keep_within: Option<Duration>,
}

impl Policy {
    /// True when at least one rule is set. A count of 0, and a `keep_within` of zero or less,
    /// count as not set (as in restic, where 0 is the flag's default).
    pub fn is_set(&self) -> bool {
        self.counts().iter().any(|&(count, _)| count > 0) || self.within().is_some()
    }

    /// The count rules in restic's order, 0 for an unset rule.
    fn counts(&self) -> [(u32, Rule); 6] {
        [
            (self.keep_last.unwrap_or(0), Rule::Last),
            (self.keep_hourly.unwrap_or(0), Rule::Hourly),
            (self.keep_daily.unwrap_or(0), Rule::Daily),
            (self.keep_weekly.unwrap_or(0), Rule::Weekly),
            (self.keep_monthly.unwrap_or(0), Rule::Monthly),
            (self.keep_yearly.unwrap_or(0), Rule::Yearly),
        ]
    }

    fn within(&self) -> Option<Duration> {
        self.keep_within.filter(|d| *d > Duration::zero())
    }
}

/// Why a backup is kept (its Display is short English, e.g. "last", "daily 2026-11-22",
/// "weekly 2026-W47", "monthly 2026-11", "yearly 2026", "hourly 2026-11-22 09h",
/// "within the retention period of the newest", "newest backup (always kept)").
///
/// The strings are the bucket that rule kept the backup for (see the module documentation),
/// followed by ` (oldest)` when it is the oldest backup, kept only because the rule still had
/// count left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The newest backup, kept whatever the policy. Only listed when no rule keeps it, which
    /// happens only when the policy is not set.
    Newest,
    /// One of the `keep_last` newest backups.
    Last,
    Hourly(String),
    Daily(String),
    Weekly(String),
    Monthly(String),
    Yearly(String),
    /// Taken within `keep_within` before the newest backup.
    Within,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Newest => f.write_str("newest backup (always kept)"),
            Reason::Last => f.write_str("last"),
            Reason::Hourly(bucket) => write!(f, "hourly {bucket}"),
            Reason::Daily(bucket) => write!(f, "daily {bucket}"),
            Reason::Weekly(bucket) => write!(f, "weekly {bucket}"),
            Reason::Monthly(bucket) => write!(f, "monthly {bucket}"),
            Reason::Yearly(bucket) => write!(f, "yearly {bucket}"),
            Reason::Within => f.write_str("within the retention period of the newest"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<K> {
    pub item: K,
    pub taken_at: DateTime<Utc>,
    /// Empty = removed.
    pub reasons: Vec<Reason>,
}

impl<K> Verdict<K> {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Decides which of `backups` (any order; each item with its taken_at) to keep.
/// Returns one verdict per input, NEWEST FIRST (ties broken stably by input order).
/// The newest backup is ALWAYS kept (Reason::Newest), whatever the policy: KEEP_LAST is at least 1.
///
/// A kept backup lists every rule that keeps it, in restic's order: within, last, hourly,
/// daily, weekly, monthly, yearly. See the module documentation for the rules, including the
/// oldest backup kept by a rule with count left, and for where this differs from restic.
pub fn apply<K>(policy: &Policy, backups: Vec<(K, DateTime<Utc>)>) -> Vec<Verdict<K>> {
    let mut backups = backups;
    // Stable: equal timestamps stay in input order.
    backups.sort_by_key(|&(_, taken_at)| Reverse(taken_at));
    let Some(newest) = backups.first().map(|(_, taken_at)| *taken_at) else {
        return Vec::new();
    };
    let oldest_nr = backups.len() - 1;

    // A duration reaching past chrono's earliest date keeps everything.
    let within_since = policy.within().map(|d| {
        newest
            .checked_sub_signed(d)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    });

    let mut rules: Vec<Counter> = policy
        .counts()
        .into_iter()
        .filter(|&(left, _)| left > 0)
        .map(|(left, rule)| Counter {
            rule,
            left,
            last: None,
        })
        .collect();

    backups
        .into_iter()
        .enumerate()
        .map(|(nr, (item, taken_at))| {
            let mut reasons = Vec::new();
            if within_since.is_some_and(|since| taken_at >= since) {
                reasons.push(Reason::Within);
            }
            for counter in rules.iter_mut().filter(|c| c.left > 0) {
                let bucket = counter.rule.bucket(taken_at, nr);
                let seen = counter.last == Some(bucket);
                if !seen || nr == oldest_nr {
                    counter.last = Some(bucket);
                    counter.left -= 1;
                    reasons.push(counter.rule.reason(taken_at, seen));
                }
            }
            if nr == 0 && reasons.is_empty() {
                reasons.push(Reason::Newest);
            }
            Verdict {
                item,
                taken_at,
                reasons,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    /// The bucket of `t`, as an integer like restic's (`YYYYMMDDHH`, `YYYYWW`, …); only ever
    /// compared with buckets of the same rule. `keep_last`'s bucket is the position `nr`.
    fn bucket(self, t: DateTime<Utc>, nr: usize) -> i64 {
        let (year, month, day, hour) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Rule::Last => nr as i64,
            Rule::Hourly => ((year * 100 + month) * 100 + day) * 100 + hour,
            Rule::Daily => (year * 100 + month) * 100 + day,
            Rule::Weekly => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Rule::Monthly => year * 100 + month,
            Rule::Yearly => year,
        }
    }

    /// Why the rule keeps `t`; `oldest` when only because it is the oldest backup.
    fn reason(self, t: DateTime<Utc>, oldest: bool) -> Reason {
        let label = |bucket: String| {
            if oldest {
                format!("{bucket} (oldest)")
            } else {
                bucket
            }
        };
        match self {
            Rule::Last => Reason::Last,
            Rule::Hourly => Reason::Hourly(label(t.format("%Y-%m-%d %Hh").to_string())),
            Rule::Daily => Reason::Daily(label(t.format("%Y-%m-%d").to_string())),
            Rule::Weekly => {
                let week = t.iso_week();
                Reason::Weekly(label(format!("{:04}-W{:02}", week.year(), week.week())))
            }
            Rule::Monthly => Reason::Monthly(label(t.format("%Y-%m").to_string())),
            Rule::Yearly => Reason::Yearly(label(t.format("%Y").to_string())),
        }
    }
}

/// A count rule during the walk: how many buckets it may still keep, and the last it kept.
struct Counter {
    rule: Rule,
    left: u32,
    last: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    /// Every label starts with its UTC timestamp, `YYYY-MM-DD HH:MM`; a suffix tells apart
    /// backups taken at the same minute.
    fn at(label: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(&label[..16], "%Y-%m-%d %H:%M")
            .unwrap_or_else(|e| panic!("bad label {label:?}: {e}"))
            .and_utc()
    }

    fn input(labels: &[&'static str]) -> Vec<(&'static str, DateTime<Utc>)> {
        labels.iter().map(|&l| (l, at(l))).collect()
    }

    fn hourly(s: &str) -> Reason {
        Reason::Hourly(s.to_string())
    }
    fn daily(s: &str) -> Reason {
        Reason::Daily(s.to_string())
    }
    fn weekly(s: &str) -> Reason {
        Reason::Weekly(s.to_string())
    }
    fn monthly(s: &str) -> Reason {
        Reason::Monthly(s.to_string())
    }
    fn yearly(s: &str) -> Reason {
        Reason::Yearly(s.to_string())
    }

    /// The backups of the main table, in no particular order (each day's ISO week and
    /// weekday checked with `date -u -d DAY '+%a %G-W%V'`). Sorted newest first they are:
    ///
    /// ```text
    ///  0 2027-01-07 10:00   Thu 2027-W01
    ///  1 2027-01-06 09:15   Wed 2027-W01   three in one day,
    ///  2 2027-01-06 08:50                  two of them in the same hour
    ///  3 2027-01-06 08:05
    ///    (no 2027-01-05)
    ///  4 2027-01-04 10:00   Mon 2027-W01
    ///  5 2027-01-03 10:00   Sun 2026-W53   ISO year 2026, calendar year 2027
    ///  6 2027-01-02 18:00   Sat 2026-W53
    ///  7 2027-01-02 09:40
    ///  8 2027-01-02 09:10
    ///    (no 2027-01-01)
    ///  9 2026-12-31 10:00   Thu 2026-W53
    ///    (no 2026-12-30)
    /// 10 2026-12-29 10:00 a Tue 2026-W53   two at the same instant
    /// 11 2026-12-29 10:00 b
    /// 12 2026-12-28 15:00   Mon 2026-W53
    /// 13 2026-12-28 03:00
    /// 14 2026-12-24 10:00   Thu 2026-W52
    /// 15 2026-12-22 10:00   Tue 2026-W52
    /// 16 2026-12-20 10:00   Sun 2026-W51
    /// 17 2026-06-01 10:00   Mon 2026-W23
    /// 18 2026-01-02 10:00   Fri 2026-W01
    /// 19 2025-12-30 10:00   Tue 2026-W01   ISO year 2026, calendar year 2025
    /// 20 2025-11-30 10:00   Sun 2025-W48
    /// 21 2025-06-15 10:00   Sun 2025-W24
    /// 22 2025-01-01 00:30   Wed 2025-W01
    /// 23 2024-12-31 23:30   Tue 2025-W01   ISO year 2025, calendar year 2024
    /// 24 2024-07-04 12:00   Thu 2024-W27
    /// 25 2024-03-10 08:00   Sun 2024-W10
    /// 26 2024-03-10 07:00                  the oldest, same day as 25
    /// ```
    const TABLE: &[&str] = &[
        "2026-06-01 10:00",
        "2027-01-02 09:40",
        "2024-03-10 07:00",
        "2026-12-29 10:00 a",
        "2027-01-06 08:50",
        "2025-12-30 10:00",
        "2026-12-20 10:00",
        "2027-01-07 10:00",
        "2024-12-31 23:30",
        "2026-12-28 03:00",
        "2027-01-04 10:00",
        "2025-06-15 10:00",
        "2026-12-31 10:00",
        "2027-01-02 18:00",
        "2024-03-10 08:00",
        "2026-12-24 10:00",
        "2027-01-06 08:05",
        "2026-01-02 10:00",
        "2026-12-29 10:00 b",
        "2025-01-01 00:30",
        "2027-01-03 10:00",
        "2026-12-22 10:00",
        "2024-07-04 12:00",
        "2027-01-06 09:15",
        "2025-11-30 10:00",
        "2027-01-02 09:10",
        "2026-12-28 15:00",
    ];

    /// The table sorted newest first, by hand (the listing above).
    const SORTED: &[&str] = &[
        "2027-01-07 10:00",
        "2027-01-06 09:15",
        "2027-01-06 08:50",
        "2027-01-06 08:05",
        "2027-01-04 10:00",
        "2027-01-03 10:00",
        "2027-01-02 18:00",
        "2027-01-02 09:40",
        "2027-01-02 09:10",
        "2026-12-31 10:00",
        "2026-12-29 10:00 a",
        "2026-12-29 10:00 b",
        "2026-12-28 15:00",
        "2026-12-28 03:00",
        "2026-12-24 10:00",
        "2026-12-22 10:00",
        "2026-12-20 10:00",
        "2026-06-01 10:00",
        "2026-01-02 10:00",
        "2025-12-30 10:00",
        "2025-11-30 10:00",
        "2025-06-15 10:00",
        "2025-01-01 00:30",
        "2024-12-31 23:30",
        "2024-07-04 12:00",
        "2024-03-10 08:00",
        "2024-03-10 07:00",
    ];

    type Expected = Vec<(&'static str, Vec<Reason>)>;

    /// The dozen policies of the main table, each with the backups it keeps (newest first)
    /// and why; every other backup is removed. Worked out by hand from the listing above.
    fn cases() -> Vec<(&'static str, Policy, Expected)> {
        vec![
            (
                "unset policy: only the newest",
                Policy::default(),
                vec![("2027-01-07 10:00", vec![Reason::Newest])],
            ),
            (
                "every count 0 and keep_within 0: as unset",
                Policy {
                    keep_last: Some(0),
                    keep_hourly: Some(0),
                    keep_daily: Some(0),
                    keep_weekly: Some(0),
                    keep_monthly: Some(0),
                    keep_yearly: Some(0),
                    keep_within: Some(Duration::zero()),
                },
                vec![("2027-01-07 10:00", vec![Reason::Newest])],
            ),
            (
                "keep_last 2",
                Policy {
                    keep_last: Some(2),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![Reason::Last]),
                    ("2027-01-06 09:15", vec![Reason::Last]),
                ],
            ),
            (
                "keep_last 100: more than there are, all kept, none marked oldest",
                Policy {
                    keep_last: Some(100),
                    ..Policy::default()
                },
                SORTED.iter().map(|&l| (l, vec![Reason::Last])).collect(),
            ),
            (
                // 09:40 would be the 7th hour, 09:10 is in the same hour as 09:40.
                "keep_hourly 8: the newest of each of the 8 newest hours",
                Policy {
                    keep_hourly: Some(8),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![hourly("2027-01-07 10h")]),
                    ("2027-01-06 09:15", vec![hourly("2027-01-06 09h")]),
                    ("2027-01-06 08:50", vec![hourly("2027-01-06 08h")]),
                    ("2027-01-04 10:00", vec![hourly("2027-01-04 10h")]),
                    ("2027-01-03 10:00", vec![hourly("2027-01-03 10h")]),
                    ("2027-01-02 18:00", vec![hourly("2027-01-02 18h")]),
                    ("2027-01-02 09:40", vec![hourly("2027-01-02 09h")]),
                    ("2026-12-31 10:00", vec![hourly("2026-12-31 10h")]),
                ],
            ),
            (
                // Days without a backup (01-05, 01-01, 12-30) are not counted: 7 distinct
                // days reach back to 2026-12-29, of whose two backups the first in input
                // order is kept.
                "keep_daily 7 with gaps",
                Policy {
                    keep_daily: Some(7),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![daily("2027-01-07")]),
                    ("2027-01-06 09:15", vec![daily("2027-01-06")]),
                    ("2027-01-04 10:00", vec![daily("2027-01-04")]),
                    ("2027-01-03 10:00", vec![daily("2027-01-03")]),
                    ("2027-01-02 18:00", vec![daily("2027-01-02")]),
                    ("2026-12-31 10:00", vec![daily("2026-12-31")]),
                    ("2026-12-29 10:00 a", vec![daily("2026-12-29")]),
                ],
            ),
            (
                // 2027-01-02 and 2027-01-03 are in 2026-W53 with 2026-12-28..31: with the
                // calendar year they would be a week "2027-W53" of their own.
                "keep_weekly 4 across the year boundary",
                Policy {
                    keep_weekly: Some(4),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![weekly("2027-W01")]),
                    ("2027-01-03 10:00", vec![weekly("2026-W53")]),
                    ("2026-12-24 10:00", vec![weekly("2026-W52")]),
                    ("2026-12-20 10:00", vec![weekly("2026-W51")]),
                ],
            ),
            (
                // 2025-12-30 is in 2026-W01 with 2026-01-02, and 2024-12-31 in 2025-W01 with
                // 2025-01-01: neither is kept.
                "keep_weekly 10: ISO years at two more boundaries",
                Policy {
                    keep_weekly: Some(10),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![weekly("2027-W01")]),
                    ("2027-01-03 10:00", vec![weekly("2026-W53")]),
                    ("2026-12-24 10:00", vec![weekly("2026-W52")]),
                    ("2026-12-20 10:00", vec![weekly("2026-W51")]),
                    ("2026-06-01 10:00", vec![weekly("2026-W23")]),
                    ("2026-01-02 10:00", vec![weekly("2026-W01")]),
                    ("2025-11-30 10:00", vec![weekly("2025-W48")]),
                    ("2025-06-15 10:00", vec![weekly("2025-W24")]),
                    ("2025-01-01 00:30", vec![weekly("2025-W01")]),
                    ("2024-07-04 12:00", vec![weekly("2024-W27")]),
                ],
            ),
            (
                "keep_monthly 3 and keep_yearly 3: two reasons on one backup",
                Policy {
                    keep_monthly: Some(3),
                    keep_yearly: Some(3),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![monthly("2027-01"), yearly("2027")]),
                    ("2026-12-31 10:00", vec![monthly("2026-12"), yearly("2026")]),
                    ("2026-06-01 10:00", vec![monthly("2026-06")]),
                    ("2025-12-30 10:00", vec![yearly("2025")]),
                ],
            ),
            (
                // 4 years, 1 count left at the end: the oldest backup is kept although its
                // year 2024 was already kept (restic's "oldest yearly snapshot").
                "keep_yearly 5: the oldest kept with counts left",
                Policy {
                    keep_yearly: Some(5),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![yearly("2027")]),
                    ("2026-12-31 10:00", vec![yearly("2026")]),
                    ("2025-12-30 10:00", vec![yearly("2025")]),
                    ("2024-12-31 23:30", vec![yearly("2024")]),
                    ("2024-03-10 07:00", vec![yearly("2024 (oldest)")]),
                ],
            ),
            (
                // Newest 2027-01-07 10:00 minus 7 days = 2026-12-31 10:00, which is kept:
                // the bound is inclusive.
                "keep_within 7 days of the newest",
                Policy {
                    keep_within: Some(Duration::days(7)),
                    ..Policy::default()
                },
                SORTED[..10]
                    .iter()
                    .map(|&l| (l, vec![Reason::Within]))
                    .collect(),
            ),
            (
                // Since 2027-01-05 10:00.
                "keep_within 2 days and keep_weekly 2",
                Policy {
                    keep_weekly: Some(2),
                    keep_within: Some(Duration::days(2)),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![Reason::Within, weekly("2027-W01")]),
                    ("2027-01-06 09:15", vec![Reason::Within]),
                    ("2027-01-06 08:50", vec![Reason::Within]),
                    ("2027-01-06 08:05", vec![Reason::Within]),
                    ("2027-01-03 10:00", vec![weekly("2026-W53")]),
                ],
            ),
            (
                "count 0 rules ignored next to keep_weekly 2",
                Policy {
                    keep_last: Some(0),
                    keep_daily: Some(0),
                    keep_weekly: Some(2),
                    ..Policy::default()
                },
                vec![
                    ("2027-01-07 10:00", vec![weekly("2027-W01")]),
                    ("2027-01-03 10:00", vec![weekly("2026-W53")]),
                ],
            ),
            (
                "last 3, daily 4, weekly 3, monthly 2, yearly 10",
                Policy {
                    keep_last: Some(3),
                    keep_daily: Some(4),
                    keep_weekly: Some(3),
                    keep_monthly: Some(2),
                    keep_yearly: Some(10),
                    ..Policy::default()
                },
                vec![
                    (
                        "2027-01-07 10:00",
                        vec![
                            Reason::Last,
                            daily("2027-01-07"),
                            weekly("2027-W01"),
                            monthly("2027-01"),
                            yearly("2027"),
                        ],
                    ),
                    ("2027-01-06 09:15", vec![Reason::Last, daily("2027-01-06")]),
                    ("2027-01-06 08:50", vec![Reason::Last]),
                    ("2027-01-04 10:00", vec![daily("2027-01-04")]),
                    (
                        "2027-01-03 10:00",
                        vec![daily("2027-01-03"), weekly("2026-W53")],
                    ),
                    ("2026-12-31 10:00", vec![monthly("2026-12"), yearly("2026")]),
                    ("2026-12-24 10:00", vec![weekly("2026-W52")]),
                    ("2025-12-30 10:00", vec![yearly("2025")]),
                    ("2024-12-31 23:30", vec![yearly("2024")]),
                    ("2024-03-10 07:00", vec![yearly("2024 (oldest)")]),
                ],
            ),
        ]
    }

    /// Runs `policy` over `backups` and checks the verdicts against `expected` (the kept
    /// backups, newest first): one verdict per input, in the order `sorted`, every backup
    /// not in `expected` removed.
    fn check(
        name: &str,
        policy: &Policy,
        backups: Vec<(&'static str, DateTime<Utc>)>,
        sorted: &[&str],
        expected: &Expected,
    ) {
        let verdicts = apply(policy, backups);
        let order: Vec<&str> = verdicts.iter().map(|v| v.item).collect();
        assert_eq!(order, sorted, "{name}: verdicts not newest first");
        for v in &verdicts {
            assert_eq!(v.taken_at, at(v.item), "{name}: {}", v.item);
            assert_eq!(v.keep(), !v.reasons.is_empty());
        }
        let kept: Vec<(&str, Vec<Reason>)> = verdicts
            .into_iter()
            .filter(|v| v.keep())
            .map(|v| (v.item, v.reasons))
            .collect();
        assert_eq!(&kept, expected, "{name}");
    }

    #[test]
    fn table_policies() {
        let cases = cases();
        assert!(cases.len() >= 12);
        for (name, policy, expected) in &cases {
            check(name, policy, input(TABLE), SORTED, expected);
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        // Fisher-Yates with a fixed xorshift, so that a failure reproduces.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut orders: Vec<Vec<&'static str>> = vec![SORTED.to_vec(), SORTED.to_vec()];
        orders[1].reverse();
        for _ in 0..20 {
            let mut order = TABLE.to_vec();
            for i in (1..order.len()).rev() {
                order.swap(i, next(i + 1));
            }
            orders.push(order);
        }
        for (name, policy, expected) in &cases() {
            let want: Vec<(DateTime<Utc>, Vec<Reason>)> = apply(policy, input(TABLE))
                .into_iter()
                .map(|v| (v.taken_at, v.reasons))
                .collect();
            assert_eq!(
                want.iter().filter(|(_, r)| !r.is_empty()).count(),
                expected.len()
            );
            for order in &orders {
                // The two backups at 2026-12-29 10:00 may swap places; the timestamps and
                // reasons, position by position, may not change.
                let got: Vec<(DateTime<Utc>, Vec<Reason>)> = apply(policy, input(order))
                    .into_iter()
                    .map(|v| (v.taken_at, v.reasons))
                    .collect();
                assert_eq!(got, want, "{name}, input {order:?}");
            }
        }
    }

    #[test]
    fn empty_input() {
        for (name, policy, _) in &cases() {
            assert!(apply::<u8>(policy, Vec::new()).is_empty(), "{name}");
        }
    }

    #[test]
    fn single_backup_always_kept() {
        let zeros = Policy {
            keep_last: Some(0),
            keep_hourly: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            keep_yearly: Some(0),
            keep_within: None,
        };
        let only = || input(&["2026-11-22 09:30"]);
        for policy in [Policy::default(), zeros] {
            check(
                "single",
                &policy,
                only(),
                &["2026-11-22 09:30"],
                &vec![("2026-11-22 09:30", vec![Reason::Newest])],
            );
        }
        // A single backup under a set rule is kept by that rule, not as the oldest: its
        // bucket was not kept before.
        check(
            "single, daily 3",
            &Policy {
                keep_daily: Some(3),
                ..Policy::default()
            },
            only(),
            &["2026-11-22 09:30"],
            &vec![("2026-11-22 09:30", vec![daily("2026-11-22")])],
        );
    }

    #[test]
    fn keep_within_is_relative_to_the_newest_not_to_now() {
        // Daily backups at 02:00 from 2020-03-01 to 2020-03-20, years before now: 7 days
        // before the newest is 2020-03-13 02:00, so 03-13 (inclusive) to 03-20 stay.
        let labels: Vec<&'static str> = (1..=20)
            .map(|day| &*Box::leak(format!("2020-03-{day:02} 02:00").into_boxed_str()))
            .collect();
        let mut sorted = labels.clone();
        sorted.reverse();
        let expected: Expected = sorted[..8]
            .iter()
            .map(|&l| (l, vec![Reason::Within]))
            .collect();
        assert_eq!(expected.last().unwrap().0, "2020-03-13 02:00");
        let policy = Policy {
            keep_within: Some(Duration::days(7)),
            ..Policy::default()
        };
        check("within", &policy, input(&labels), &sorted, &expected);
        // Relative to now, none of them would be within 7 days.
        assert!(at("2020-03-20 02:00") < Utc::now() - Duration::days(7));
    }

    #[test]
    fn keep_within_beyond_the_calendar_keeps_all() {
        let policy = Policy {
            keep_within: Some(Duration::MAX),
            ..Policy::default()
        };
        let verdicts = apply(&policy, input(TABLE));
        assert!(verdicts.iter().all(|v| v.reasons == [Reason::Within]));
    }

    #[test]
    fn identical_timestamps_keep_input_order() {
        // w is a day older than x, y and z, which share one instant.
        let backups = input(&[
            "2026-05-04 12:00 w",
            "2026-05-05 12:00 x",
            "2026-05-05 12:00 y",
            "2026-05-05 12:00 z",
        ]);
        let sorted = [
            "2026-05-05 12:00 x",
            "2026-05-05 12:00 y",
            "2026-05-05 12:00 z",
            "2026-05-04 12:00 w",
        ];
        check(
            "ties, last 2",
            &Policy {
                keep_last: Some(2),
                ..Policy::default()
            },
            backups.clone(),
            &sorted,
            &vec![
                ("2026-05-05 12:00 x", vec![Reason::Last]),
                ("2026-05-05 12:00 y", vec![Reason::Last]),
            ],
        );
        check(
            "ties, daily 2",
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            backups.clone(),
            &sorted,
            &vec![
                ("2026-05-05 12:00 x", vec![daily("2026-05-05")]),
                ("2026-05-04 12:00 w", vec![daily("2026-05-04")]),
            ],
        );
        check(
            "ties, unset",
            &Policy::default(),
            backups,
            &sorted,
            &vec![("2026-05-05 12:00 x", vec![Reason::Newest])],
        );

        // Many ties among many backups: older and newer instants interleaved in the input,
        // each instant's backups still in input order.
        let newer = at("2026-05-05 12:00");
        let older = at("2026-05-04 12:00");
        let backups: Vec<(usize, DateTime<Utc>)> = (0..200)
            .map(|i| (i, if i % 3 == 0 { older } else { newer }))
            .collect();
        let verdicts = apply(
            &Policy {
                keep_last: Some(5),
                ..Policy::default()
            },
            backups,
        );
        let order: Vec<usize> = verdicts.iter().map(|v| v.item).collect();
        let want: Vec<usize> = (0..200)
            .filter(|i| i % 3 != 0)
            .chain((0..200).filter(|i| i % 3 == 0))
            .collect();
        assert_eq!(order, want);
        let kept: Vec<usize> = verdicts
            .iter()
            .filter(|v| v.keep())
            .map(|v| v.item)
            .collect();
        assert_eq!(kept, [1, 2, 4, 5, 7]);
    }

    #[test]
    fn is_set() {
        assert!(!Policy::default().is_set());
        assert!(!Policy {
            keep_last: Some(0),
            keep_yearly: Some(0),
            keep_within: Some(Duration::zero()),
            ..Policy::default()
        }
        .is_set());
        assert!(!Policy {
            keep_within: Some(Duration::days(-1)),
            ..Policy::default()
        }
        .is_set());
        assert!(Policy {
            keep_monthly: Some(1),
            ..Policy::default()
        }
        .is_set());
        assert!(Policy {
            keep_within: Some(Duration::seconds(1)),
            ..Policy::default()
        }
        .is_set());
    }

    #[test]
    fn reasons_display() {
        let table = [
            (Reason::Newest, "newest backup (always kept)"),
            (Reason::Last, "last"),
            (hourly("2026-11-22 09h"), "hourly 2026-11-22 09h"),
            (daily("2026-11-22"), "daily 2026-11-22"),
            (weekly("2026-W47"), "weekly 2026-W47"),
            (monthly("2026-11"), "monthly 2026-11"),
            (yearly("2026"), "yearly 2026"),
            (yearly("2024 (oldest)"), "yearly 2024 (oldest)"),
            (Reason::Within, "within the retention period of the newest"),
        ];
        for (reason, text) in table {
            assert_eq!(reason.to_string(), text);
        }
    }
}
