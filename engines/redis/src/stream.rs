//! What a backup holds, whichever mode wrote it: keys with their `DUMP` payloads and absolute
//! expiry, and function libraries. The logical format is defined here; the RDB format is read
//! by [`crate::rdb`] into the same items.
//!
//! Logical format (`redis-logical`), all integers little-endian:
//!
//! ```text
//! magic     "BRREDIS1"
//! header    u32 length, then JSON {"source": "Redis 7.0.15", "taken_at_ms": …}
//! records   'D' u32 db                              following keys belong to logical db `db`
//!           'K' u32 len, key, i64 expire_at_ms (-1: none), u64 len, DUMP payload
//!           'F' u64 len, FUNCTION DUMP payload
//!           'E' u64 key count                       the end; a stream without it is truncated
//! ```

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::rdb::{RdbItem, RdbReader};

pub const MAGIC: &[u8; 8] = b"BRREDIS1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Key {
        db: u32,
        key: Vec<u8>,
        expire_at_ms: Option<i64>,
        /// A `DUMP` payload: type, value, RDB format version, CRC-64.
        payload: Vec<u8>,
    },
    /// A function library's source, for `FUNCTION LOAD REPLACE` (RDB backups).
    FunctionCode(Vec<u8>),
    /// Every function library, for `FUNCTION RESTORE … REPLACE` (logical backups).
    FunctionDump(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The server the backup was taken from, as `Redis 7.0.15`.
    pub source: String,
    pub taken_at_ms: i64,
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the logical stream ends before its end record: the backup is truncated",
    )
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

pub struct LogicalWriter<W: Write> {
    out: W,
    db: Option<u32>,
    keys: u64,
}

impl<W: Write> LogicalWriter<W> {
    pub fn new(mut out: W, header: &Header) -> io::Result<Self> {
        let json = serde_json::to_vec(header).expect("header serializes");
        out.write_all(MAGIC)?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        Ok(LogicalWriter {
            out,
            db: None,
            keys: 0,
        })
    }

    pub fn key(
        &mut self,
        db: u32,
        key: &[u8],
        expire_at_ms: Option<i64>,
        payload: &[u8],
    ) -> io::Result<()> {
        if self.db != Some(db) {
            self.out.write_all(b"D")?;
            self.out.write_all(&db.to_le_bytes())?;
            self.db = Some(db);
        }
        self.out.write_all(b"K")?;
        self.out.write_all(&(key.len() as u32).to_le_bytes())?;
        self.out.write_all(key)?;
        self.out
            .write_all(&expire_at_ms.unwrap_or(-1).to_le_bytes())?;
        self.out.write_all(&(payload.len() as u64).to_le_bytes())?;
        self.out.write_all(payload)?;
        self.keys += 1;
        Ok(())
    }

    pub fn functions(&mut self, payload: &[u8]) -> io::Result<()> {
        self.out.write_all(b"F")?;
        self.out.write_all(&(payload.len() as u64).to_le_bytes())?;
        self.out.write_all(payload)
    }

    /// Writes the end record; returns the number of keys written.
    pub fn finish(mut self) -> io::Result<u64> {
        self.out.write_all(b"E")?;
        self.out.write_all(&self.keys.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.keys)
    }
}

pub struct LogicalReader<R: Read> {
    input: R,
    header: Header,
    db: u32,
    keys: u64,
    done: bool,
}

fn read_array<const N: usize, R: Read>(r: &mut R) -> io::Result<[u8; N]> {
    let mut b = [0; N];
    r.read_exact(&mut b).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => truncated(),
        _ => e,
    })?;
    Ok(b)
}

/// Consumes `len` bytes without keeping them.
fn skip_bytes<R: Read>(r: &mut R, len: u64) -> io::Result<()> {
    if io::copy(&mut r.take(len), &mut io::sink())? != len {
        return Err(truncated());
    }
    Ok(())
}

fn read_bytes<R: Read>(r: &mut R, len: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let read = r.take(len).read_to_end(&mut data)?;
    if read as u64 != len {
        return Err(truncated());
    }
    Ok(data)
}

impl<R: Read> LogicalReader<R> {
    pub fn new(mut input: R) -> io::Result<Self> {
        let magic: [u8; 8] = read_array(&mut input)?;
        if &magic != MAGIC {
            return Err(invalid(
                "the backup does not start with the logical format's magic: it is not a redis-logical backup".into(),
            ));
        }
        let len = u32::from_le_bytes(read_array(&mut input)?);
        let json = read_bytes(&mut input, len.into())?;
        let header = serde_json::from_slice(&json)
            .map_err(|e| invalid(format!("the logical stream's header is malformed: {e}")))?;
        Ok(LogicalReader {
            input,
            header,
            db: 0,
            keys: 0,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        Ok(self.read_item(true)?.map(|(item, _)| item))
    }

    /// Like [`LogicalReader::next_item`], without keeping payloads: they are left empty and
    /// their length comes alongside.
    pub fn next_measured(&mut self) -> io::Result<Option<(Item, u64)>> {
        self.read_item(false)
    }

    fn read_item(&mut self, keep: bool) -> io::Result<Option<(Item, u64)>> {
        let payload = |input: &mut R, len: u64| {
            if keep {
                read_bytes(input, len)
            } else {
                skip_bytes(input, len).map(|()| Vec::new())
            }
        };
        if self.done {
            return Ok(None);
        }
        loop {
            let [tag] = read_array(&mut self.input)?;
            match tag {
                b'D' => self.db = u32::from_le_bytes(read_array(&mut self.input)?),
                b'K' => {
                    let len = u32::from_le_bytes(read_array(&mut self.input)?);
                    let key = read_bytes(&mut self.input, len.into())?;
                    let expire = i64::from_le_bytes(read_array(&mut self.input)?);
                    let len = u64::from_le_bytes(read_array(&mut self.input)?);
                    let payload = payload(&mut self.input, len)?;
                    self.keys += 1;
                    let item = Item::Key {
                        db: self.db,
                        key,
                        expire_at_ms: (expire >= 0).then_some(expire),
                        payload,
                    };
                    return Ok(Some((item, len)));
                }
                b'F' => {
                    let len = u64::from_le_bytes(read_array(&mut self.input)?);
                    let item = Item::FunctionDump(payload(&mut self.input, len)?);
                    return Ok(Some((item, len)));
                }
                b'E' => {
                    let count = u64::from_le_bytes(read_array(&mut self.input)?);
                    if count != self.keys {
                        return Err(invalid(format!(
                            "the logical stream holds {} keys but its end record says {count}: the backup is corrupt",
                            self.keys
                        )));
                    }
                    self.done = true;
                    return Ok(None);
                }
                other => {
                    return Err(invalid(format!(
                        "unknown record {other:#04x} in the logical stream: the backup is corrupt"
                    )))
                }
            }
        }
    }
}

/// Either format, read as items.
pub enum Source<R: Read> {
    Rdb(RdbReader<R>),
    Logical(LogicalReader<R>),
}

impl<R: Read> Source<R> {
    /// The RDB format version of an RDB backup's payloads (logical payloads carry their own).
    pub fn rdb_version(&self) -> Option<u16> {
        match self {
            Source::Rdb(r) => Some(r.version()),
            Source::Logical(_) => None,
        }
    }

    /// Every item without keeping payloads, with the size of the argument a restore sends
    /// for it: the `RESTORE` payload of a key, the `FUNCTION LOAD`/`FUNCTION RESTORE` argument
    /// of functions.
    pub fn next_measured(&mut self) -> io::Result<Option<(Item, u64)>> {
        match self {
            Source::Logical(r) => r.next_measured(),
            Source::Rdb(r) => loop {
                match r.next_measured().map_err(|e| invalid(e.to_string()))? {
                    None => return Ok(None),
                    Some((RdbItem::Key(k), len)) => {
                        let db = u32::try_from(k.db).map_err(|_| {
                            invalid(format!("logical database {} is out of range", k.db))
                        })?;
                        let item = Item::Key {
                            db,
                            key: k.key,
                            expire_at_ms: k.expire_at_ms,
                            payload: Vec::new(),
                        };
                        // The type byte before the value; the version and CRC-64 after it.
                        return Ok(Some((item, 1 + len + 10)));
                    }
                    Some((RdbItem::Function(code), _)) => {
                        let len = code.len() as u64;
                        return Ok(Some((Item::FunctionCode(code), len)));
                    }
                    Some(_) => {}
                }
            },
        }
    }

    /// Module types whose module-global data (MODULE_AUX) an RDB backup holds: `RESTORE` cannot
    /// carry it, so a restore skips it.
    pub fn module_aux(&self) -> &[String] {
        match self {
            Source::Rdb(r) => r.skipped_module_aux(),
            Source::Logical(_) => &[],
        }
    }

    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        match self {
            Source::Logical(r) => r.next_item(),
            Source::Rdb(r) => loop {
                let version = r.version();
                match r.next_item().map_err(|e| invalid(e.to_string()))? {
                    None => return Ok(None),
                    Some(RdbItem::Key(mut k)) => {
                        let db = u32::try_from(k.db).map_err(|_| {
                            invalid(format!("logical database {} is out of range", k.db))
                        })?;
                        let key = std::mem::take(&mut k.key);
                        let expire_at_ms = k.expire_at_ms;
                        return Ok(Some(Item::Key {
                            db,
                            key,
                            expire_at_ms,
                            payload: k.into_dump_payload(version),
                        }));
                    }
                    Some(RdbItem::Function(code)) => return Ok(Some(Item::FunctionCode(code))),
                    Some(_) => {}
                }
            },
        }
    }
}

/// The largest single argument a restore of a backup sends to the server (a `RESTORE`
/// payload, or the function libraries): the server refuses one larger than its
/// `proto-max-bulk-len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Largest {
    pub bytes: u64,
    /// The key and its logical database; `None` for the function libraries.
    pub key: Option<(u32, Vec<u8>)>,
}

impl Largest {
    /// `key "big:blob" in db 0`, or `the function libraries`.
    pub fn describe(&self) -> String {
        match &self.key {
            Some((db, key)) => format!("key {} in db {db}", key_for_humans(key)),
            None => "the function libraries".into(),
        }
    }
}

/// A key for messages and the manifest: escaped, and cut to 200 bytes.
pub fn key_for_humans(key: &[u8]) -> String {
    const SHOWN: usize = 200;
    let shown = key[..key.len().min(SHOWN)].escape_ascii().to_string();
    if key.len() > SHOWN {
        format!("\"{shown}…\" ({} bytes)", key.len())
    } else {
        format!("\"{shown}\"")
    }
}

/// What a backup holds, read from the stream itself without keeping values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub keys: u64,
    pub largest: Option<Largest>,
    /// Module types with module-global data (MODULE_AUX) in an RDB backup.
    pub module_aux: Vec<String>,
}

/// Reads a whole backup in `format` (checking its framing, and an RDB's checksum) and says what
/// it holds.
pub fn summarize<R: Read>(format: &str, input: R) -> Result<Summary, String> {
    let mut source = crate::load::open(format, input)?;
    let mut summary = Summary::default();
    let read = |e: io::Error| format!("the backup cannot be read: {e}");
    while let Some((item, bytes)) = source.next_measured().map_err(read)? {
        let key = match item {
            Item::Key { db, key, .. } => {
                summary.keys += 1;
                Some((db, key))
            }
            Item::FunctionCode(_) | Item::FunctionDump(_) => None,
        };
        if summary.largest.as_ref().is_none_or(|l| bytes > l.bytes) {
            summary.largest = Some(Largest { bytes, key });
        }
    }
    summary.module_aux = source.module_aux().to_vec();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            source: "Redis 7.0.15".into(),
            taken_at_ms: 1_700_000_000_000,
        }
    }

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = LogicalWriter::new(&mut out, &header()).unwrap();
        w.key(0, b"a", None, b"pa").unwrap();
        w.key(3, b"b\0\xff", Some(42), b"pb").unwrap();
        w.key(3, b"c", None, b"").unwrap();
        w.functions(b"fn").unwrap();
        assert_eq!(w.finish().unwrap(), 3);
        out
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<Item>> {
        let mut r = LogicalReader::new(bytes)?;
        assert_eq!(r.header(), &header());
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn round_trips() {
        let items = read_all(&sample()).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(
            items[1],
            Item::Key {
                db: 3,
                key: b"b\0\xff".to_vec(),
                expire_at_ms: Some(42),
                payload: b"pb".to_vec()
            }
        );
        assert_eq!(items[3], Item::FunctionDump(b"fn".to_vec()));
    }

    #[test]
    fn summarizes_without_keeping_payloads() {
        let mut out = Vec::new();
        let mut w = LogicalWriter::new(&mut out, &header()).unwrap();
        w.key(0, b"a", None, &[1; 10]).unwrap();
        w.key(3, b"big\0", Some(42), &[2; 300_000]).unwrap();
        w.key(3, b"c", None, &[3; 20]).unwrap();
        w.functions(&[4; 1000]).unwrap();
        w.finish().unwrap();
        let summary = summarize(crate::LOGICAL.name, &out[..]).unwrap();
        assert_eq!(summary.keys, 3);
        let largest = summary.largest.unwrap();
        assert_eq!(largest.bytes, 300_000);
        assert_eq!(largest.key, Some((3, b"big\0".to_vec())));
        assert_eq!(largest.describe(), r#"key "big\x00" in db 3"#);
        assert!(summary.module_aux.is_empty());
        let mut r = LogicalReader::new(&out[..]).unwrap();
        let (item, len) = r.next_measured().unwrap().unwrap();
        assert_eq!(len, 10);
        assert!(matches!(item, Item::Key { payload, .. } if payload.is_empty()));
        // A truncated stream is an error, not a summary.
        let err = summarize(crate::LOGICAL.name, &out[..out.len() - 100]).unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        assert_eq!(
            key_for_humans(&[b'k'; 300]).len(),
            "\"\"… (300 bytes)".len() + 200
        );
    }

    #[test]
    fn truncation_and_corruption_are_detected() {
        let full = sample();
        for cut in [4, 12, full.len() - 9, full.len() - 1] {
            let err = read_all(&full[..cut]).unwrap_err();
            assert!(
                err.to_string().contains("truncated") || err.kind() == io::ErrorKind::UnexpectedEof,
                "{cut}: {err}"
            );
        }
        let mut bad_count = full.clone();
        let n = bad_count.len();
        bad_count[n - 8] = 7;
        assert!(read_all(&bad_count)
            .unwrap_err()
            .to_string()
            .contains("end record says 7"));
        assert!(read_all(b"REDIS0011").is_err());
    }
}
