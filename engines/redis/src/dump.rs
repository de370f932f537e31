//! The logical backup: every key of every logical database through the normal command protocol
//! (SCAN, then pipelined DUMP and PEXPIRETIME), for servers that refuse replication (SYNC), as
//! many managed services do. Not a point-in-time snapshot: keys written during the scan may or
//! may not be included.

use std::io::{BufWriter, Write};

use crate::flavor::Server;
use crate::resp::{ClientError, Conn, Reply};
use crate::stream::{Header, LogicalWriter};

/// Keys per SCAN call (a hint to the server) and per pipelined batch of DUMPs.
const SCAN_COUNT: &str = "1000";
const OUTPUT_BUFFER: usize = 1 << 20;

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
    let (keys, dbs) = dump(&mut conn, BufWriter::with_capacity(OUTPUT_BUFFER, stdout))?;
    Ok(format!("dumped {keys} keys from {dbs} logical databases"))
}

fn failed(e: ClientError) -> String {
    format!("the logical dump failed: {e}")
}

fn dump<W: Write>(conn: &mut Conn, out: W) -> Result<(u64, usize), String> {
    let info = conn.text(&[b"INFO", b"server"]).map_err(failed)?;
    let server = Server::from_info(&info).ok_or("INFO server names no Redis or Valkey version")?;
    // PEXPIRETIME (7.0+) gives the absolute expiry; PTTL is relative to now.
    let absolute = server.version.major >= 7;
    let keyspace = conn.text(&[b"INFO", b"keyspace"]).map_err(failed)?;
    let dbs = databases_with_keys(&keyspace);
    let header = Header {
        source: server.describe(),
        taken_at_ms: now_ms(),
    };
    let io = |e: std::io::Error| format!("writing the dump failed: {e}");
    let mut writer = LogicalWriter::new(out, &header).map_err(io)?;
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
            for key in &keys {
                conn.queue(&[b"DUMP", key]).map_err(failed)?;
                conn.queue(&[if absolute { b"PEXPIRETIME" } else { b"PTTL" }, key])
                    .map_err(failed)?;
            }
            let now = now_ms();
            let mut replies = conn.replies().map_err(failed)?.into_iter();
            for key in keys {
                let (dumped, ttl) = (replies.next(), replies.next());
                let payload = match dumped {
                    Some(Reply::Bulk(Some(p))) => p,
                    // Deleted since the SCAN.
                    Some(Reply::Bulk(None)) => continue,
                    other => {
                        return Err(format!(
                            "DUMP of key {:?} in db {db} failed: {other:?}",
                            String::from_utf8_lossy(&key)
                        ))
                    }
                };
                let expire_at_ms = match ttl.as_ref().and_then(Reply::as_int) {
                    Some(-2) => continue,
                    Some(t) if t < 0 => None,
                    Some(t) if absolute => Some(t),
                    Some(t) => Some(now + t),
                    None => {
                        return Err(format!(
                            "{} failed: {ttl:?}",
                            if absolute { "PEXPIRETIME" } else { "PTTL" }
                        ))
                    }
                };
                writer.key(db, &key, expire_at_ms, &payload).map_err(io)?;
            }
            if next == b"0" {
                break;
            }
            cursor = next;
        }
    }
    if let Some(functions) = function_dump(conn)? {
        writer.functions(&functions).map_err(io)?;
    }
    let keys = writer.finish().map_err(io)?;
    Ok((keys, dbs.len()))
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
