//! The streaming pipeline, shared by every engine:
//!
//! backup:  dump tool stdout → count → compress → [encrypt] → sha256 → parts → storage
//!          (multipart, bounded)
//! restore: storage → sha256 + count → [decrypt] → decompress → restore tool stdin, verified
//!          before EOF (and, for engines whose restore is not atomic, verified in a first pass)
//! verify:  storage → sha256 + count → [decrypt] → decompress → count, against the manifest
//!
//! Encryption (age, `crypto.rs`) runs on the compressor's thread; the sha256 is of the stored,
//! encrypted bytes, so a verify without a key still proves the object intact.
//!
//! Nothing touches local disk, memory is bounded by the part size times the parts in flight,
//! and a tool's exit status is checked only after its stream has ended.

mod backup;
mod read;
mod restore;
mod server;
mod verify;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use backup::backup;
pub use restore::{restore, RestoreOutcome};
pub use server::{backup_set, refuse_set_as_database, restore_set, SetRestored};
pub use verify::{check_keys, read_manifest, read_verified, verify, verify_object, Checked};

/// The S3 limit on parts per upload.
pub const MAX_PARTS: u64 = 10_000;
pub const MIN_PART_SIZE: u64 = 8 << 20;
/// The S3 limit on one part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Parts in flight are bounded by this many bytes, so memory stays flat when parts grow.
pub const IN_FLIGHT_BUDGET: u64 = 32 << 20;
/// How much larger than the database the stream may grow before running out of parts.
const SIZE_HEADROOM: u64 = 4;

/// Chooses the part size before the upload starts: every non-final part has the same size
/// (R2 requires it), and `estimate × headroom` must fit in 10,000 parts (with 10% spare).
pub fn choose_part_size(override_bytes: Option<u64>, estimate: Option<u64>) -> u64 {
    if let Some(size) = override_bytes {
        return size;
    }
    let budget = estimate.unwrap_or(0).saturating_mul(SIZE_HEADROOM);
    let needed = budget.div_ceil(MAX_PARTS * 9 / 10);
    let mib = 1 << 20;
    needed
        .div_ceil(mib)
        .saturating_mul(mib)
        .clamp(MIN_PART_SIZE, MAX_PART_SIZE)
}

/// Refuses, before the dump, a part size set by `STORAGE_PART_SIZE_MB` with which 10,000 parts
/// cannot hold the database's estimated size with headroom: the upload would fail at part
/// 10,001, hours in.
pub fn check_part_size(
    part_size: u64,
    configured: bool,
    estimate: Option<u64>,
) -> Result<(), crate::error::Error> {
    let Some(estimate) = estimate else {
        return Ok(());
    };
    let budget = estimate.saturating_mul(SIZE_HEADROOM);
    if !configured || part_size.saturating_mul(MAX_PARTS) >= budget {
        return Ok(());
    }
    let minimum_mib = budget.div_ceil(MAX_PARTS).div_ceil(1 << 20);
    Err(crate::error::Error::Config(crate::env::ConfigError {
        problems: vec![crate::env::Problem {
            var: "STORAGE_PART_SIZE_MB".into(),
            message: format!(
                "{} MiB parts hold at most {} in 10,000 parts, but the database is estimated at {} (room is kept for {SIZE_HEADROOM}× that): set STORAGE_PART_SIZE_MB to at least {minimum_mib}, or unset it to let the runner choose; nothing was dumped",
                part_size >> 20,
                human(part_size.saturating_mul(MAX_PARTS)),
                human(estimate),
            ),
        }],
    }))
}

/// Parts in flight at once: the configured concurrency, within the memory budget.
pub fn parts_in_flight(part_size: u64, concurrency: usize) -> usize {
    let by_budget = (IN_FLIGHT_BUDGET / part_size.max(1)).max(1) as usize;
    concurrency.min(by_budget).max(1)
}

/// Byte counters shared with the progress reporter.
#[derive(Clone)]
pub struct Progress {
    pub raw: Arc<AtomicU64>,
    pub stored: Arc<AtomicU64>,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            raw: Arc::default(),
            stored: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl Progress {
    /// Logs a progress line every `interval` until the returned handle is dropped.
    pub fn report_every(&self, interval: Option<Duration>, phase: &'static str) -> ProgressTicker {
        let Some(interval) = interval else {
            return ProgressTicker(None);
        };
        let p = self.clone();
        ProgressTicker(Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let raw = p.raw.load(Ordering::Relaxed);
                let stored = p.stored.load(Ordering::Relaxed);
                let secs = p.started.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    phase,
                    bytes_raw = raw,
                    bytes_stored = stored,
                    elapsed_s = secs as u64,
                    "progress: {} dump, {} stored, {}/s",
                    human(raw),
                    human(stored),
                    human((raw as f64 / secs) as u64)
                );
            }
        })))
    }
}

pub struct ProgressTicker(Option<tokio::task::JoinHandle<()>>);

impl Drop for ProgressTicker {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// Logs what the preflight learned: its warnings, then the versions that fit together.
pub fn log_preflight(server: &crate::engine::ServerInfo) {
    for w in &server.warnings {
        tracing::warn!(phase = "preflight", "{w}");
    }
    tracing::info!(
        phase = "preflight",
        server_version = %server.server_version,
        client_version = %server.client_version,
        size_bytes = server.size_bytes,
        "server and client tools are compatible"
    );
}

/// `1 database`, `3 databases`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn part_size_has_a_floor_and_fits_10000_parts_with_headroom() {
        assert_eq!(choose_part_size(None, None), MIN_PART_SIZE);
        assert_eq!(choose_part_size(None, Some(GIB)), MIN_PART_SIZE);
        for size in [50 * GIB, 1024 * GIB, 5 * 1024 * GIB] {
            let part = choose_part_size(None, Some(size));
            assert_eq!(part % (1 << 20), 0);
            assert!(part * MAX_PARTS >= size * SIZE_HEADROOM, "{size}: {part}");
            assert!(part * 9_000 >= size * SIZE_HEADROOM, "spare parts");
        }
        assert_eq!(choose_part_size(Some(5 << 20), Some(1024 * GIB)), 5 << 20);
        // Past 11 TiB or so, parts stop at the 5 GiB limit.
        assert_eq!(
            choose_part_size(None, Some(100 * 1024 * GIB)),
            MAX_PART_SIZE
        );
    }

    #[test]
    fn a_configured_part_size_too_small_for_the_database_is_refused() {
        // 5 MiB × 10,000 = 48.8 GiB: enough for 10 GiB (×4 headroom), not for 20 GiB.
        assert!(check_part_size(5 << 20, true, Some(10 * GIB)).is_ok());
        let err = check_part_size(5 << 20, true, Some(20 * GIB)).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ExitCode::Config);
        let text = err.to_string();
        assert!(text.contains("STORAGE_PART_SIZE_MB"), "{text}");
        assert!(text.contains("at least 9"), "{text}");
        // Chosen sizes, and unknown estimates, are never refused.
        assert!(check_part_size(8 << 20, false, Some(1024 * GIB)).is_ok());
        assert!(check_part_size(5 << 20, true, None).is_ok());
    }

    #[test]
    fn in_flight_parts_respect_the_memory_budget() {
        assert_eq!(parts_in_flight(8 << 20, 3), 3);
        assert_eq!(parts_in_flight(8 << 20, 16), 4);
        assert_eq!(parts_in_flight(512 << 20, 4), 1);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
