//! Prometheus alert rules over the metrics the runner pushes to a Pushgateway, and their
//! `promtool test rules` file: each alert shown firing, and not firing, on input series.
//!
//! The metrics (all gauges) carry `job` (METRICS_JOB_NAME), `engine`, `database`, `operation`
//! (backup, restore, verify, list, prune, check), and the `instance=""` the Pushgateway adds,
//! which Prometheus stores as no label at all.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::plan::{Op, CHECK_MAX_AGE, CHECK_MAX_AGE_SECS, HOUR, OPS};
use super::{yaml, Files, GENERATED};

pub const RULES_FILE: &str = "prometheus/backup-runner-alerts.yml";
pub const TESTS_FILE: &str = "prometheus/backup-runner-alerts.test.yml";

/// The labels that identify one job's series.
const KEY: &str = "job, instance, engine, database, operation";

/// A job still marked running this long after its start was killed without reporting (OOM,
/// SIGKILL, a lost node): a job stopped at its deadline gets SIGTERM and reports itself.
const STUCK_MARGIN_SECS: i64 = 15 * 60;

/// Every operation's deadline, `list` included (it runs on demand, like prune).
fn deadlines() -> Vec<(&'static str, i64)> {
    let mut d: Vec<(&'static str, i64)> = OPS
        .iter()
        .map(|op| (op.name(), op.deadline_secs()))
        .collect();
    d.push(("list", Op::Prune.deadline_secs()));
    d
}

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize, Clone)]
struct Rule {
    alert: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn rule(alert: &str, severity: &str, expr: String, summary: &str, description: &str) -> Rule {
    Rule {
        alert: alert.into(),
        expr,
        labels: BTreeMap::from([("severity".to_string(), severity.to_string())]),
        annotations: BTreeMap::from([
            ("summary".to_string(), summary.to_string()),
            ("description".to_string(), description.to_string()),
        ]),
    }
}

fn hours(secs: i64) -> String {
    match (secs / HOUR, secs % HOUR / 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

fn rules() -> Vec<Rule> {
    let db = "{{ $labels.engine }} database {{ $labels.database }}";
    let mut stuck_groups: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (op, deadline) in deadlines() {
        stuck_groups
            .entry(deadline + STUCK_MARGIN_SECS)
            .or_default()
            .push(op);
    }
    let stuck: Vec<String> = stuck_groups
        .iter()
        .map(|(after, ops)| {
            let ops = ops.join("|");
            format!(
                "# {ops}: running for more than {} (deadline + 15m)\n(\n  backup_runner_job_running{{operation=~\"{ops}\"}} == 1\n  and on ({KEY})\n  time() - backup_runner_last_start_timestamp_seconds{{operation=~\"{ops}\"}} > {after}\n)",
                hours(*after),
            )
        })
        .collect();
    vec![
        rule(
            "BackupRunnerBackupTooOld",
            "critical",
            format!(
                "# A daily backup's last success is more than {CHECK_MAX_AGE} old (a day plus 2h of slack).\n\
                 # Another schedule: its interval plus slack, in seconds, as CHECK_MAX_AGE.\n\
                 time() - backup_runner_last_success_timestamp_seconds{{operation=\"backup\"}} > {CHECK_MAX_AGE_SECS}"
            ),
            &format!("No successful backup of {db} for more than {CHECK_MAX_AGE}"),
            "The last successful backup (job {{ $labels.job }}) is older than a daily schedule allows. \
             Read the backup job's last runs and logs (backup_runner_last_exit_code).",
        ),
        rule(
            "BackupRunnerBackupNeverSucceeded",
            "critical",
            format!(
                "# A backup has run, and none ever succeeded.\n\
                 backup_runner_last_run_timestamp_seconds{{operation=\"backup\"}}\n\
                 unless on ({KEY})\n\
                 backup_runner_last_success_timestamp_seconds{{operation=\"backup\"}}"
            ),
            &format!("No backup of {db} has ever succeeded"),
            "Backups of this database (job {{ $labels.job }}) have run but none succeeded. \
             Read the backup job's logs and its exit code (README: Exit codes).",
        ),
        rule(
            "BackupRunnerBackupsStale",
            "critical",
            "# The check job (exit 10): the newest complete backup is older than CHECK_MAX_AGE, or there is none.\n\
             backup_runner_last_exit_code{operation=\"check\"} == 10"
                .to_string(),
            &format!("The newest backup of {db} is older than CHECK_MAX_AGE"),
            "The check job (job {{ $labels.job }}) found no complete backup young enough in storage. \
             Backups stopped or fail: look at the backup job.",
        ),
        rule(
            "BackupRunnerJobFailed",
            "warning",
            format!(
                "# The last run of an operation failed (stale backups are BackupRunnerBackupsStale).\n\
                 # Resolves with the operation's next successful run; for a one-off job, delete its\n\
                 # group from the Pushgateway.\n\
                 backup_runner_last_exit_code != 0\n\
                 unless on ({KEY})\n\
                 backup_runner_last_exit_code{{operation=\"check\"}} == 10"
            ),
            &format!("The last {{{{ $labels.operation }}}} of {db} failed with exit code {{{{ $value }}}}"),
            "The last {{ $labels.operation }} run (job {{ $labels.job }}) exited with {{ $value }}: \
             see the README's exit code table and the job's log.",
        ),
        rule(
            "BackupRunnerJobStuck",
            "warning",
            format!(
                "# Still marked running well past the operation's deadline: the runner was killed\n\
                 # without reporting (out of memory, SIGKILL, a lost node).\n{}",
                stuck.join("\nor\n")
            ),
            &format!("A {{{{ $labels.operation }}}} of {db} is stuck or was killed"),
            "A {{ $labels.operation }} run (job {{ $labels.job }}) started long ago and never reported its end. \
             It was probably killed (out of memory, evicted): look at the job's pod.",
        ),
    ]
}

// `promtool test rules` input.

#[derive(Serialize)]
struct TestFile {
    rule_files: Vec<String>,
    evaluation_interval: String,
    tests: Vec<TestGroup>,
}

#[derive(Serialize)]
struct TestGroup {
    name: String,
    interval: String,
    input_series: Vec<Series>,
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Serialize, Clone)]
struct Series {
    series: String,
    values: String,
}

#[derive(Serialize)]
struct AlertTest {
    eval_time: String,
    alertname: String,
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Serialize)]
struct ExpAlert {
    exp_labels: BTreeMap<String, String>,
    exp_annotations: BTreeMap<String, String>,
}

/// One job's identity: (database, operation).
type Id = (&'static str, &'static str);

fn labels((database, operation): Id) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("job".to_string(), "backup-runner".to_string()),
        ("engine".to_string(), "postgres".to_string()),
        ("database".to_string(), database.to_string()),
        ("operation".to_string(), operation.to_string()),
    ])
}

/// A series with a constant value, sampled every minute for `minutes`.
fn series(metric: &str, id: Id, value: i64, minutes: i64) -> Series {
    let labels: Vec<String> = labels(id)
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    Series {
        series: format!("backup_runner_{metric}{{{}}}", labels.join(", ")),
        values: format!("{value}x{minutes}"),
    }
}

/// What a finished run leaves in the Pushgateway.
fn finished(
    id: Id,
    start: i64,
    end: i64,
    exit: i64,
    success: Option<i64>,
    minutes: i64,
) -> Vec<Series> {
    let mut s = vec![
        series("job_running", id, 0, minutes),
        series("last_start_timestamp_seconds", id, start, minutes),
        series("last_run_timestamp_seconds", id, end, minutes),
        series("last_exit_code", id, exit, minutes),
    ];
    if let Some(at) = success {
        s.push(series("last_success_timestamp_seconds", id, at, minutes));
    }
    s
}

/// What a run that never reported its end leaves.
fn running(id: Id, start: i64, minutes: i64) -> Vec<Series> {
    vec![
        series("job_running", id, 1, minutes),
        series("last_start_timestamp_seconds", id, start, minutes),
    ]
}

/// The alert as promtool reports it: the series' labels, the rule's, its annotations rendered.
fn expect(rules: &[Rule], alert: &str, id: Id, value: &str) -> ExpAlert {
    let rule = rules.iter().find(|r| r.alert == alert).expect("a rule");
    let labels = labels(id);
    let render = |text: &str| {
        let mut out = text.replace("{{ $value }}", value);
        for (k, v) in &labels {
            out = out.replace(&format!("{{{{ $labels.{k} }}}}"), v);
        }
        assert!(!out.contains("{{"), "unrendered template in {out:?}");
        out
    };
    let mut exp_labels = labels.clone();
    exp_labels.extend(rule.labels.clone());
    ExpAlert {
        exp_labels,
        exp_annotations: rule
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), render(v)))
            .collect(),
    }
}

fn at(alertname: &str, secs: i64, exp_alerts: Vec<ExpAlert>) -> AlertTest {
    AlertTest {
        eval_time: format!("{}m", secs / 60),
        alertname: alertname.into(),
        exp_alerts,
    }
}

fn tests(rules: &[Rule]) -> Vec<TestGroup> {
    let minutes = 30 * 60;
    let backup: Id = ("app", "backup");
    let limit = CHECK_MAX_AGE_SECS;
    let mut groups = Vec::new();

    // A backup succeeded at 0 and none since: too old only after CHECK_MAX_AGE.
    groups.push(TestGroup {
        name: "the last success ages past CHECK_MAX_AGE".into(),
        interval: "1m".into(),
        input_series: [
            finished(backup, 0, 600, 0, Some(600), minutes),
            finished(("app", "check"), 0, 60, 0, Some(60), minutes),
        ]
        .concat(),
        alert_rule_test: vec![
            at("BackupRunnerBackupTooOld", limit - HOUR, vec![]),
            at("BackupRunnerBackupsStale", limit - HOUR, vec![]),
            at(
                "BackupRunnerBackupTooOld",
                limit + 2 * HOUR,
                vec![expect(rules, "BackupRunnerBackupTooOld", backup, "")],
            ),
            at("BackupRunnerBackupNeverSucceeded", limit + 2 * HOUR, vec![]),
            at("BackupRunnerJobFailed", limit + 2 * HOUR, vec![]),
            at("BackupRunnerJobStuck", limit + 2 * HOUR, vec![]),
        ],
    });

    // Two databases: one whose backups always failed (exit 3), one fine.
    let never: Id = ("never", "backup");
    let fine: Id = ("fine", "backup");
    let mut input = finished(never, 3600, 3700, 3, None, 240);
    input.extend(finished(fine, 3600, 3700, 0, Some(3700), 240));
    groups.push(TestGroup {
        name: "a backup that never succeeded, beside one that did".into(),
        interval: "1m".into(),
        input_series: input,
        alert_rule_test: vec![
            at(
                "BackupRunnerBackupNeverSucceeded",
                2 * HOUR,
                vec![expect(rules, "BackupRunnerBackupNeverSucceeded", never, "")],
            ),
            at(
                "BackupRunnerJobFailed",
                2 * HOUR,
                vec![expect(rules, "BackupRunnerJobFailed", never, "3")],
            ),
            at("BackupRunnerBackupTooOld", 2 * HOUR, vec![]),
        ],
    });

    // The check job: stale backups (exit 10) against a storage error (exit 6) and a pass.
    let stale: Id = ("stale", "check");
    let unreachable: Id = ("unreachable", "check");
    let fresh: Id = ("fresh", "check");
    let mut input = finished(stale, 0, 60, 10, None, 120);
    input.extend(finished(unreachable, 0, 60, 6, None, 120));
    input.extend(finished(fresh, 0, 60, 0, Some(60), 120));
    groups.push(TestGroup {
        name: "the check job: stale backups, a storage error, a pass".into(),
        interval: "1m".into(),
        input_series: input,
        alert_rule_test: vec![
            at(
                "BackupRunnerBackupsStale",
                HOUR,
                vec![expect(rules, "BackupRunnerBackupsStale", stale, "10")],
            ),
            at(
                "BackupRunnerJobFailed",
                HOUR,
                vec![expect(rules, "BackupRunnerJobFailed", unreachable, "6")],
            ),
        ],
    });

    // Killed without reporting: a backup and a restore still marked running, and a finished
    // prune. Each is stuck only past its own deadline.
    let restore: Id = ("app", "restore");
    let prune: Id = ("app", "prune");
    let mut input = running(backup, 0, 14 * 60);
    input.extend(running(restore, 0, 14 * 60));
    input.extend(finished(prune, 0, 60, 0, Some(60), 14 * 60));
    let backup_stuck = Op::Backup.deadline_secs() + STUCK_MARGIN_SECS;
    let restore_stuck = Op::Restore.deadline_secs() + STUCK_MARGIN_SECS;
    groups.push(TestGroup {
        name: "jobs killed without reporting their end".into(),
        interval: "1m".into(),
        input_series: input,
        alert_rule_test: vec![
            at("BackupRunnerJobStuck", backup_stuck - 10 * 60, vec![]),
            at(
                "BackupRunnerJobStuck",
                backup_stuck + 10 * 60,
                vec![expect(rules, "BackupRunnerJobStuck", backup, "")],
            ),
            at(
                "BackupRunnerJobStuck",
                restore_stuck + 10 * 60,
                vec![
                    expect(rules, "BackupRunnerJobStuck", backup, ""),
                    expect(rules, "BackupRunnerJobStuck", restore, ""),
                ],
            ),
            at("BackupRunnerJobFailed", restore_stuck + 10 * 60, vec![]),
        ],
    });
    groups
}

pub fn files(files: &mut Files) -> Result<()> {
    let rules = rules();
    let header = format!(
        "{GENERATED}\nAlerts on the metrics the runner pushes to a Pushgateway (METRICS_PUSHGATEWAY_URL).\n\
         The Pushgateway's scrape job needs `honor_labels: true`, so that the pushed `job` label is kept.\n\
         Checked by `promtool check rules` and `promtool test rules backup-runner-alerts.test.yml`."
    );
    let file = RuleFile {
        groups: vec![Group {
            name: "backup-runner".into(),
            rules: rules.clone(),
        }],
    };
    files.insert(RULES_FILE.into(), yaml(&header, &file)?);
    let test_header = format!(
        "{GENERATED}\nUnit tests of backup-runner-alerts.yml: promtool test rules backup-runner-alerts.test.yml"
    );
    let tests = TestFile {
        rule_files: vec!["backup-runner-alerts.yml".into()],
        evaluation_interval: "1m".into(),
        tests: tests(&rules),
    };
    files.insert(TESTS_FILE.into(), yaml(&test_header, &tests)?);
    Ok(())
}
