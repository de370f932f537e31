//! The results: a table per database size, the ratios against the targets, the JSON behind
//! them and the plot (drawn by `benchmarks/plot.py`).

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{bail, Result};
use serde_json::json;

use super::measure::Run;
use crate::root;

/// Per database size (MiB target): the database's bytes and the runs.
pub type Results = BTreeMap<u64, (u64, Vec<Run>)>;

/// What differs between the engines' reports.
pub struct Style {
    /// The database server, for the column of its CPU.
    pub server: &'static str,
    /// The JSON key of that column.
    pub server_cpu_key: &'static str,
    /// The ratios the targets are stated in: (what, method a, method b), a / b of wall time,
    /// methods matched by the start of their names.
    pub ratios: &'static [(&'static str, &'static str, &'static str)],
}

pub const POSTGRES: Style = Style {
    server: "PostgreSQL",
    server_cpu_key: "postgres_cpu_s",
    ratios: &[
        (
            "runner backup / pg_dump -Z0 alone",
            "runner backup (defaults)",
            "pg_dump to /dev/null (-Fc -Z0)",
        ),
        (
            "runner backup / pg_dump -Z0 piped into the same zstd",
            "runner backup (defaults)",
            "pg_dump -Fc -Z0 | zstd",
        ),
        (
            "runner backup / pg_dump with its own compression",
            "runner backup (defaults)",
            "pg_dump to /dev/null (-Fc, its gzip)",
        ),
        (
            "runner restore / pg_restore from a local file",
            "runner restore",
            "pg_restore from",
        ),
        (
            "Plan B / runner backup",
            "Plan B",
            "runner backup (defaults)",
        ),
        (
            "script / runner backup",
            "script",
            "runner backup (defaults)",
        ),
    ],
};

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

pub fn table(style: &Style, db_bytes: u64, runs: &[Run]) -> String {
    let mut t = format!(
        "| Method | Wall s | CPU s | {} CPU s | S3 server CPU s | Peak RSS MiB (largest process) | Local disk written MiB | Temp files MiB | Output MiB | DB MiB/s |\n|---|---|---|---|---|---|---|---|---|---|\n",
        style.server
    );
    for r in runs {
        let (name, rss) = r.peak().unwrap_or(("-", 0));
        t.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} ({name}) | {:.1} | {:.1} | {} | {:.0} |\n",
            r.method.replace('|', "\\|"),
            r.wall_s,
            r.cpu_s(),
            r.db_cpu_s,
            r.s3_cpu_s,
            rss as f64 / 1024.0,
            mib(r.written()),
            mib(r.temp_bytes),
            if r.output_bytes > 0 {
                format!("{:.1}", mib(r.output_bytes))
            } else {
                "-".into()
            },
            mib(db_bytes) / r.wall_s.max(0.001)
        ));
    }
    t
}

/// The first run whose method starts with `method`.
pub fn find<'a>(runs: &'a [Run], method: &str) -> Option<&'a Run> {
    runs.iter().find(|r| r.method.starts_with(method))
}

/// The style's ratios, for the methods present.
pub fn ratios(style: &Style, runs: &[Run]) -> Vec<(&'static str, f64)> {
    style
        .ratios
        .iter()
        .filter_map(|&(what, a, b)| Some((what, find(runs, a)?.wall_s / find(runs, b)?.wall_s)))
        .collect()
}

pub fn print_runs(style: &Style, heading: &str, db_bytes: u64, runs: &[Run]) {
    println!("\nbench: {heading}\n{}", table(style, db_bytes, runs));
    for (what, r) in ratios(style, runs) {
        println!("- {what}: {r:.2}×");
    }
}

/// One run with every process, for the JSON.
pub fn run_json(style: &Style, r: &Run) -> serde_json::Map<String, serde_json::Value> {
    let value = json!({
        "method": r.method,
        "wall_s": r.wall_s,
        "cpu_s": r.cpu_s(),
        style.server_cpu_key: r.db_cpu_s,
        "s3_server_cpu_s": r.s3_cpu_s,
        "peak_rss_kib": r.peak().map(|(_, k)| k).unwrap_or(0),
        "written_bytes": r.written(),
        "temp_bytes": r.temp_bytes,
        "output_bytes": r.output_bytes,
        "processes": r.processes.iter().map(|(n, u)| json!({
            "name": n,
            "wall_s": u.wall_s,
            "cpu_s": u.cpu_s,
            "max_rss_kib": u.max_rss_kib,
            "written_bytes": u.written_bytes,
        })).collect::<Vec<_>>(),
    });
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("json! of an object literal"),
    }
}

pub fn write(results: &Results, machine: &str) -> Result<()> {
    let style = &POSTGRES;
    let dir = root().join("benchmarks");
    std::fs::create_dir_all(&dir)?;
    let mut md = format!("Machine: {machine}\n\n");
    let mut rows = Vec::new();
    for (size, (db_bytes, runs)) in results {
        md.push_str(&format!(
            "### ~{size} MiB target (database {:.0} MiB)\n\n{}\n",
            mib(*db_bytes),
            table(style, *db_bytes, runs)
        ));
        for (what, r) in ratios(style, runs) {
            md.push_str(&format!("- {what}: **{r:.2}×**\n"));
        }
        md.push('\n');
        for r in runs {
            let mut row = run_json(style, r);
            row.insert("size_mib".into(), json!(size));
            row.insert("db_bytes".into(), json!(db_bytes));
            rows.push(serde_json::Value::Object(row));
        }
    }
    std::fs::write(dir.join("postgres.md"), &md)?;
    std::fs::write(
        dir.join("postgres.json"),
        serde_json::to_string_pretty(&json!({ "machine": machine, "runs": rows }))? + "\n",
    )?;
    println!("bench: wrote benchmarks/postgres.md and benchmarks/postgres.json");
    let status = Command::new("python3")
        .arg(dir.join("plot.py"))
        .arg(dir.join("postgres.json"))
        .arg(dir.join("postgres.png"))
        .status()?;
    if !status.success() {
        bail!("plotting failed (python3 benchmarks/plot.py; matplotlib comes with .ci/install-bench-deps.sh)");
    }
    println!("bench: wrote benchmarks/postgres.png");
    Ok(())
}
