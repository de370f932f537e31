//! The logical backup: every key of every logical database through the normal command protocol
//! (SCAN, then pipelined DUMP and PEXPIRETIME), for servers that refuse replication (SYNC), as
//! many managed services do. Not a point-in-time snapshot: keys written during the scan may or
//! may not be included.

use std::io::{BufWriter, Write};

use crate::flavor::Server;
use crate::resp::{ClientError, Conn, Reply};
use crate::stream::{Header, LogicalWriter};

/// Keys per SCAN call (a hint to the server).
const SCAN_COUNT: &str = "1000";
const OUTPUT_BUFFER: usize = 1 << 20;
/// About how many bytes of DUMP replies one pipelined round trip should bring back. The server
/// holds the replies not yet read in its output buffer, and the dump holds one at a time, so
/// the number of keys per round trip is sized from the payloads seen so far: small keys go up
/// to [`WINDOW_MAX_KEYS`] at a time, a run of large values a few at a time.
pub const WINDOW_BYTES: u64 = 8 << 20;
pub const WINDOW_MAX_KEYS: usize = 1000;
/// Keys in the first round trip, before any payload size is known.
pub const WINDOW_FIRST_KEYS: usize = 4;

/// How many keys to DUMP in the next pipelined round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    keys: usize,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            keys: WINDOW_FIRST_KEYS,
        }
    }
}

impl Window {
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Sizes the next round trip from the last one (`keys` payloads of `bytes` in all): as many
    /// keys of that average size as fit in [`WINDOW_BYTES`], at least one, and at most twice the
    /// last window (a run of small keys after large ones grows it back step by step).
    pub fn observe(&mut self, keys: usize, bytes: u64) {
        if keys == 0 {
            return;
        }
        let per_key = (bytes / keys as u64).max(1);
        let fit = usize::try_from(WINDOW_BYTES / per_key)
            .unwrap_or(usize::MAX)
            .clamp(1, WINDOW_MAX_KEYS);
        self.keys = fit.min(self.keys.saturating_mul(2));
    }
}

/// Logical databases that hold keys, from `INFO keyspace` (`db3:keys=10,expires=0,…`).
pub fn databases_with_keys(keyspace: &str) -> Vec<(u32, u64)> {
    keyspace
        .lines()
        .filter_map(|line| {
            let (db, rest) = line.trim().split_once(':')?;
            let db = db.strip_prefix("db")?.parse().ok()?;
            let keys = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .filter(|(_, keys)| *keys > 0)
        .collect()
}

pub fn main() -> Result<String, String> {
    let target = crate::child::target_from_env()?;
    let mut conn = Conn::connect(&target).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout().lock();
    let done = dump(&mut conn, BufWriter::with_capacity(OUTPUT_BUFFER, stdout))?;
    let rss = runner_core::job::peak_rss_bytes()
        .map(|b| format!(", peak RSS {b} bytes"))
        .unwrap_or_default();
    Ok(format!(
        "dumped {} keys from {} logical databases (largest payload {} bytes, at most {} keys per round trip{rss})",
        done.keys, done.dbs, done.largest_payload, done.widest_window
    ))
}

/// What [`dump`] wrote.
struct Dumped {
    keys: u64,
    dbs: usize,
    largest_payload: u64,
    widest_window: usize,
}

fn failed(e: ClientError) -> String {
    format!("the logical dump failed: {e}")
}

fn dump<W: Write>(conn: &mut Conn, out: W) -> Result<Dumped, String> {
    let info = conn.text(&[b"INFO", b"server"]).map_err(failed)?;
    let server = Server::from_info(&info).ok_or("INFO server names no Redis or Valkey version")?;
    // PEXPIRETIME (7.0+) gives the absolute expiry; PTTL is relative to now.
    let absolute = server.version.major >= 7;
    let ttl_command: &[u8] = if absolute { b"PEXPIRETIME" } else { b"PTTL" };
    let keyspace = conn.text(&[b"INFO", b"keyspace"]).map_err(failed)?;
    let dbs = databases_with_keys(&keyspace);
    let header = Header {
        source: server.describe(),
        taken_at_ms: now_ms(),
    };
    let io = |e: std::io::Error| format!("writing the dump failed: {e}");
    let mut writer = LogicalWriter::new(out, &header).map_err(io)?;
    let mut window = Window::default();
    let mut largest_payload = 0u64;
    let mut widest_window = 0usize;
    for &(db, _) in &dbs {
        let select = conn
            .call(&[b"SELECT", db.to_string().as_bytes()])
            .map_err(failed)?;
        if let Some(e) = select.error() {
            return Err(format!("SELECT {db} failed: {e}"));
        }
        let mut cursor = b"0".to_vec();
        loop {
            let reply = conn
                .call(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT.as_bytes()])
                .map_err(failed)?;
            let (next, keys) = scan_reply(reply)?;
            let mut rest = &keys[..];
            while !rest.is_empty() {
                let (batch, tail) = rest.split_at(window.keys().min(rest.len()));
                rest = tail;
                widest_window = widest_window.max(batch.len());
                // The expiry first: each payload is written out as soon as it is read.
                for key in batch {
                    conn.queue(&[ttl_command, key]).map_err(failed)?;
                    conn.queue(&[b"DUMP", key]).map_err(failed)?;
                }
                conn.send().map_err(failed)?;
                let now = now_ms();
                let mut bytes = 0u64;
                for key in batch {
                    let ttl = conn.next_reply().map_err(failed)?;
                    let dumped = conn.next_reply().map_err(failed)?;
                    let payload = match dumped {
                        Reply::Bulk(Some(p)) => p,
                        // Deleted since the SCAN.
                        Reply::Bulk(None) => continue,
                        other => {
                            return Err(format!(
                                "DUMP of key {:?} in db {db} failed: {other:?}",
                                String::from_utf8_lossy(key)
                            ))
                        }
                    };
                    let expire_at_ms = match ttl.as_int() {
                        // Absent when the expiry was read: created since, left out.
                        Some(-2) => continue,
                        Some(t) if t < 0 => None,
                        Some(t) if absolute => Some(t),
                        Some(t) => Some(now + t),
                        None => {
                            return Err(format!(
                                "{} failed: {ttl:?}",
                                String::from_utf8_lossy(ttl_command)
                            ))
                        }
                    };
                    bytes += payload.len() as u64;
                    largest_payload = largest_payload.max(payload.len() as u64);
                    writer.key(db, key, expire_at_ms, &payload).map_err(io)?;
                }
                window.observe(batch.len(), bytes);
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    if let Some(functions) = function_dump(conn)? {
        largest_payload = largest_payload.max(functions.len() as u64);
        writer.functions(&functions).map_err(io)?;
    }
    let keys = writer.finish().map_err(io)?;
    Ok(Dumped {
        keys,
        dbs: dbs.len(),
        largest_payload,
        widest_window,
    })
}

/// Every function library (Redis 7.0+), or `None` when there are none.
fn function_dump(conn: &mut Conn) -> Result<Option<Vec<u8>>, String> {
    match conn.call(&[b"FUNCTION", b"LIST"]).map_err(failed)? {
        Reply::Array(Some(libs)) if !libs.is_empty() => {}
        // No libraries, or a server without functions.
        _ => return Ok(None),
    }
    match conn.call(&[b"FUNCTION", b"DUMP"]).map_err(failed)? {
        Reply::Bulk(Some(p)) => Ok(Some(p)),
        other => Err(format!("FUNCTION DUMP failed: {other:?}")),
    }
}

fn scan_reply(reply: Reply) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let bad = |r: &dyn std::fmt::Debug| format!("unexpected SCAN reply: {r:?}");
    let Reply::Array(Some(mut parts)) = reply else {
        return Err(bad(&reply));
    };
    if parts.len() != 2 {
        return Err(bad(&parts));
    }
    let keys = match parts.pop() {
        Some(Reply::Array(Some(keys))) => keys
            .into_iter()
            .map(|k| k.into_bulk().ok_or("a SCAN key is not a string"))
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(bad(&other)),
    };
    let cursor = parts
        .pop()
        .and_then(Reply::into_bulk)
        .ok_or("SCAN returned no cursor")?;
    Ok((cursor, keys))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_keyspace() {
        let info = "# Keyspace\r\ndb0:keys=200010,expires=12,avg_ttl=0,subexpiry=0\r\ndb3:keys=7,expires=0,avg_ttl=0\r\ndb4:keys=0,expires=0\r\n";
        assert_eq!(databases_with_keys(info), [(0, 200010), (3, 7)]);
        assert!(databases_with_keys("# Keyspace\r\n").is_empty());
    }

    #[test]
    fn the_window_follows_payload_sizes() {
        let mut w = Window::default();
        assert_eq!(w.keys(), WINDOW_FIRST_KEYS);
        // Small keys: doubling up to the maximum.
        let mut sizes = Vec::new();
        for _ in 0..12 {
            let n = w.keys();
            w.observe(n, n as u64 * 100);
            sizes.push(w.keys());
        }
        assert_eq!(
            &sizes[..9],
            [
                8,
                16,
                32,
                64,
                128,
                256,
                512,
                WINDOW_MAX_KEYS,
                WINDOW_MAX_KEYS
            ]
        );
        // A run of 5 MiB values: one key per round trip at once, so at most one payload and
        // one unread reply are ever held at a time.
        w.observe(WINDOW_MAX_KEYS, WINDOW_MAX_KEYS as u64 * (5 << 20));
        assert_eq!(w.keys(), 1);
        w.observe(1, 5 << 20);
        assert_eq!(w.keys(), 1);
        // 1 MiB values: eight per round trip (8 MiB).
        w.observe(1, 1 << 20);
        assert_eq!(w.keys(), 2);
        w.observe(2, 2 << 20);
        assert_eq!(w.keys(), 4);
        w.observe(4, 4 << 20);
        assert_eq!(w.keys(), 8);
        w.observe(8, 8 << 20);
        assert_eq!(w.keys(), 8);
        // Whatever the sizes, the bytes asked for in one round trip stay near the budget.
        for size in [1u64, 10, 1000, 100_000, 3 << 20, 50 << 20, 1 << 30] {
            let mut w = Window::default();
            for _ in 0..20 {
                let n = w.keys();
                w.observe(n, n as u64 * size);
            }
            let held = w.keys() as u64 * size;
            assert!(w.keys() >= 1 && w.keys() <= WINDOW_MAX_KEYS, "{size}");
            assert!(held <= WINDOW_BYTES.max(size), "{size}: {held}");
        }
        // An empty round trip changes nothing.
        let before = w;
        w.observe(0, 0);
        assert_eq!(w, before);
    }

    #[test]
    fn reads_scan_replies() {
        let reply = Reply::Array(Some(vec![
            Reply::Bulk(Some(b"17".to_vec())),
            Reply::Array(Some(vec![Reply::Bulk(Some(b"k\0".to_vec()))])),
        ]));
        assert_eq!(
            scan_reply(reply).unwrap(),
            (b"17".to_vec(), vec![b"k\0".to_vec()])
        );
        assert!(scan_reply(Reply::Error("NOPERM".into())).is_err());
    }
}
