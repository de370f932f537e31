//! The restore: reads a backup (RDB or logical) from stdin and writes every key into a running
//! server with pipelined `RESTORE … ABSTTL REPLACE`, so no file ever needs to reach the server's
//! disk. Every payload's format version is checked against the server before it is sent.

use std::collections::BTreeSet;
use std::io::{BufReader, Read};

use crate::dump::now_ms;
use crate::flavor::Server;
use crate::rdb::{self, RdbReader};
use crate::resp::{ClientError, Conn, Reply};
use crate::stream::{Item, LogicalReader, Source};

const INPUT_BUFFER: usize = 1 << 20;
/// A batch is sent when it holds this many bytes or commands.
const BATCH_BYTES: usize = 8 << 20;
const BATCH_COMMANDS: usize = 512;
/// Module keys named in the final error, at most.
const LISTED_KEYS: usize = 10;

pub fn main() -> Result<String, String> {
    let target = crate::child::target_from_env()?;
    let format = std::env::var(crate::child::FORMAT).unwrap_or_default();
    let mut conn = Conn::connect(&target).map_err(|e| e.to_string())?;
    let input = BufReader::with_capacity(INPUT_BUFFER, std::io::stdin().lock());
    let source = open(&format, input)?;
    let flush_first = std::env::var(crate::child::FLUSH).is_ok_and(|v| v == "true");
    Loader::new(&mut conn)?.load(source, flush_first)
}

pub fn open<R: Read>(format: &str, input: R) -> Result<Source<R>, String> {
    if format == crate::RDB.name {
        RdbReader::new(input)
            .map(Source::Rdb)
            .map_err(|e| format!("the backup is not a readable RDB file: {e}"))
    } else if format == crate::LOGICAL.name {
        LogicalReader::new(input)
            .map(Source::Logical)
            .map_err(|e| e.to_string())
    } else {
        Err(format!("unknown backup format {format:?}"))
    }
}

enum Sent {
    Select(u32),
    Restore {
        key: Vec<u8>,
        module: Option<String>,
    },
    Functions,
}

struct Loader<'a> {
    conn: &'a mut Conn,
    server: Server,
    sent: Vec<Sent>,
    db: Option<u32>,
    restored: u64,
    expired: u64,
    dbs: BTreeSet<u32>,
    libraries: u64,
    module_failures: Vec<String>,
    module_failed: u64,
    checked_versions: BTreeSet<u16>,
    /// The target's `proto-max-bulk-len`, when it can be read.
    bulk_limit: Option<u64>,
}

fn key_name(key: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(key))
}

impl<'a> Loader<'a> {
    fn new(conn: &'a mut Conn) -> Result<Self, String> {
        let info = conn.text(&[b"INFO", b"server"]).map_err(failed)?;
        let server =
            Server::from_info(&info).ok_or("INFO server names no Redis or Valkey version")?;
        let bulk_limit = bulk_limit(conn);
        Ok(Loader {
            conn,
            server,
            sent: Vec::new(),
            db: None,
            restored: 0,
            expired: 0,
            dbs: BTreeSet::new(),
            libraries: 0,
            module_failures: Vec::new(),
            module_failed: 0,
            checked_versions: BTreeSet::new(),
            bulk_limit,
        })
    }

    /// Refuses an argument the target would refuse (and drop the connection for), before it
    /// is sent.
    fn check_size(&self, bytes: usize, what: impl FnOnce() -> String) -> Result<(), String> {
        match self.bulk_limit {
            Some(limit) if bytes as u64 > limit => Err(format!(
                "{}{}",
                too_large(bytes as u64, &what(), limit),
                self.partial()
            )),
            _ => Ok(()),
        }
    }

    fn check_version(&mut self, version: u16) -> Result<(), String> {
        if self.checked_versions.insert(version) && !self.server.can_load(version) {
            return Err(format!(
                "the backup holds RDB format {version}, which {} cannot load (it needs {}){}",
                self.server.describe(),
                Server::loaders_of(version),
                self.partial()
            ));
        }
        Ok(())
    }

    fn load<R: Read>(mut self, mut source: Source<R>, flush_first: bool) -> Result<String, String> {
        if let Some(version) = source.rdb_version() {
            self.check_version(version)?;
        }
        // The first payload shows the backup's format: the target is emptied only once it fits.
        let mut item = self.next(&mut source)?;
        if let Some(Item::Key { key, payload, .. }) = &item {
            let version = version_of(key, payload)?;
            self.check_version(version)?;
        }
        if flush_first {
            if let Some(e) = self.conn.call(&[b"FLUSHALL"]).map_err(failed)?.error() {
                return Err(format!("FLUSHALL failed: {e}"));
            }
            eprintln!("emptied the target (FLUSHALL, RESTORE_FLUSH)");
        }
        while let Some(current) = item {
            match current {
                Item::Key {
                    db,
                    key,
                    expire_at_ms,
                    payload,
                } => self.key(db, key, expire_at_ms, payload)?,
                Item::FunctionCode(code) => {
                    self.check_size(code.len(), || "the function libraries".into())?;
                    self.queue(&[b"FUNCTION", b"LOAD", b"REPLACE", &code], Sent::Functions)?;
                    self.send()?;
                }
                Item::FunctionDump(dump) => {
                    self.check_size(dump.len(), || "the function libraries".into())?;
                    self.queue(
                        &[b"FUNCTION", b"RESTORE", &dump, b"REPLACE"],
                        Sent::Functions,
                    )?;
                    self.send()?;
                }
            }
            item = self.next(&mut source)?;
        }
        self.send()?;
        if !source.module_aux().is_empty() {
            eprintln!("warning: {}", module_aux_loss(source.module_aux()));
        }
        if self.module_failed > 0 {
            return Err(format!(
                "{} keys hold module values the target cannot load (load the same modules into the target, or remove these keys before the backup): {}; the other {} keys were restored",
                self.module_failed,
                self.module_failures.join(", "),
                self.restored
            ));
        }
        let dbs: Vec<String> = self.dbs.iter().map(u32::to_string).collect();
        Ok(format!(
            "restored {} keys into logical databases {} ({} already expired and skipped, {} function library loads)",
            self.restored,
            if dbs.is_empty() { "none".into() } else { dbs.join(", ") },
            self.expired,
            self.libraries
        ))
    }

    fn key(
        &mut self,
        db: u32,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let version = version_of(&key, &payload)?;
        self.check_version(version)?;
        if matches!(expire_at_ms, Some(at) if at <= now_ms()) {
            self.expired += 1;
            return Ok(());
        }
        self.check_size(payload.len(), || {
            format!("key {} in db {db}", crate::stream::key_for_humans(&key))
        })?;
        if self.db != Some(db) {
            self.queue(&[b"SELECT", db.to_string().as_bytes()], Sent::Select(db))?;
            self.db = Some(db);
            self.dbs.insert(db);
        }
        let ttl = expire_at_ms.unwrap_or(0).to_string();
        let module = matches!(payload.first(), Some(6 | 7))
            .then(|| rdb::module_name(&payload[1..]).unwrap_or_else(|| "unknown module".into()));
        let args: [&[u8]; 6] = [
            b"RESTORE",
            &key,
            ttl.as_bytes(),
            &payload,
            b"ABSTTL",
            b"REPLACE",
        ];
        self.conn
            .queue(&args)
            .map_err(|e| format!("{}{}", failed(e), self.partial()))?;
        self.sent.push(Sent::Restore { key, module });
        if self.conn.queued_bytes() >= BATCH_BYTES || self.conn.queued() >= BATCH_COMMANDS {
            self.send()?;
        }
        Ok(())
    }

    fn queue(&mut self, args: &[&[u8]], what: Sent) -> Result<(), String> {
        self.conn
            .queue(args)
            .map_err(|e| format!("{}{}", failed(e), self.partial()))?;
        self.sent.push(what);
        Ok(())
    }

    fn next<R: Read>(&self, source: &mut Source<R>) -> Result<Option<Item>, String> {
        source
            .next_item()
            .map_err(|e| format!("reading the backup failed: {e}{}", self.partial()))
    }

    fn partial(&self) -> String {
        if self.restored == 0 {
            String::new()
        } else {
            format!(
                "; {} keys were restored before this, so the target now holds a partial restore: restore again with RESTORE_FLUSH=true",
                self.restored
            )
        }
    }

    fn send(&mut self) -> Result<(), String> {
        if self.sent.is_empty() {
            return Ok(());
        }
        let replies = self
            .conn
            .replies()
            .map_err(|e| format!("{}{}", failed(e), self.partial()))?;
        let sent = std::mem::take(&mut self.sent);
        for (what, reply) in sent.into_iter().zip(replies) {
            let error = match reply {
                Reply::Error(e) => e,
                _ => {
                    match what {
                        Sent::Restore { .. } => self.restored += 1,
                        Sent::Functions => self.libraries += 1,
                        Sent::Select(_) => {}
                    }
                    continue;
                }
            };
            match what {
                Sent::Select(db) => {
                    return Err(format!(
                        "the target cannot select logical database {db} ({error}): raise its `databases` setting{}",
                        self.partial()
                    ))
                }
                Sent::Restore { key, module: Some(module) } => {
                    self.module_failed += 1;
                    if self.module_failures.len() < LISTED_KEYS {
                        self.module_failures.push(format!("{} ({module}: {error})", key_name(&key)));
                    }
                }
                Sent::Restore { key, module: None } => {
                    return Err(format!(
                        "RESTORE of key {} failed: {error}{}",
                        key_name(&key),
                        self.partial()
                    ))
                }
                Sent::Functions => {
                    return Err(format!("restoring the function libraries failed: {error}{}", self.partial()))
                }
            }
        }
        Ok(())
    }
}

/// The server's `proto-max-bulk-len` (the largest argument it accepts), or `None` when CONFIG
/// is not allowed (managed services often rename or deny it).
pub fn bulk_limit(conn: &mut Conn) -> Option<u64> {
    match conn
        .call(&[b"CONFIG", b"GET", b"proto-max-bulk-len"])
        .ok()?
    {
        Reply::Array(Some(items)) => {
            let value = items.into_iter().nth(1)?.into_bulk()?;
            std::str::from_utf8(&value).ok()?.trim().parse().ok()
        }
        _ => None,
    }
}

/// Why an argument of `bytes` cannot be sent to a server whose `proto-max-bulk-len` is `limit`,
/// and the fix.
pub fn too_large(bytes: u64, what: &str, limit: u64) -> String {
    const MIB: u64 = 1 << 20;
    let enough = bytes.div_ceil(MIB) * MIB;
    format!(
        "the backup holds a value of {bytes} bytes ({what}), larger than the target's proto-max-bulk-len of {limit} bytes: the target would refuse it. Raise the target's limit with `CONFIG SET proto-max-bulk-len {enough}` (or proto-max-bulk-len in its configuration file) and restore again"
    )
}

/// The warning for module-global data (MODULE_AUX) that a restore cannot bring back.
pub fn module_aux_loss(modules: &[String]) -> String {
    format!(
        "the snapshot holds module data kept outside keys (RDB MODULE_AUX records) of module type{} {}: RESTORE cannot carry it, so a restore of this backup does not bring it back; save that module's data with the module's own tools",
        if modules.len() == 1 { "" } else { "s" },
        modules.join(", ")
    )
}

fn version_of(key: &[u8], payload: &[u8]) -> Result<u16, String> {
    rdb::payload_version(payload).ok_or_else(|| {
        format!(
            "the payload of key {} is too short: the backup is corrupt",
            key_name(key)
        )
    })
}

fn failed(e: ClientError) -> String {
    format!("the restore failed: {e}")
}
