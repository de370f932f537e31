//! A streaming reader of Redis/Valkey RDB files (a `redis-cli --rdb -` / `valkey-cli --rdb -`
//! replication snapshot).
//!
//! It does not decode values into data structures: for every key it finds where the value's
//! serialization ends and hands back those bytes verbatim, so that the caller can build a DUMP
//! payload ([`dump_payload`]) and send it with `RESTORE`. Only one value is held in memory at a
//! time; everything else is streamed.
//!
//! The formats below were checked against the servers' own loaders (`rdbLoadRioWithLoadingCtx`,
//! `rdbLoadObject`, `rdbLoadCheckModuleValue` in `src/rdb.c`, constants in `src/rdb.h`) of
//! Redis (7.0, and 7.4/8.x for RDB 12) and Valkey (8.x, and 9.x for RDB 80).
//!
//! Value types (the byte before the key):
//!
//! | type | name                          | serialization (what is copied)                      |
//! |------|-------------------------------|-----------------------------------------------------|
//! | 0    | STRING                        | string                                              |
//! | 1, 2 | LIST, SET                     | len × string                                        |
//! | 3    | ZSET                          | len × (string, 1-byte-length ASCII double)          |
//! | 4    | HASH                          | len × (string, string)                              |
//! | 5    | ZSET_2                        | len × (string, 8-byte binary double)                |
//! | 6    | MODULE_PRE_GA                 | unsupported (4.0 release candidates)                |
//! | 7    | MODULE_2                      | module id (len), module opcodes until EOF (0)       |
//! | 9–13, 16, 17, 20 | ziplist/listpack/intset encodings | one string                     |
//! | 14   | LIST_QUICKLIST                | len × string                                        |
//! | 15, 19, 21 | STREAM_LISTPACKS(_2/_3) | see `copy_stream`                                   |
//! | 18   | LIST_QUICKLIST_2              | len × (container len, string)                       |
//! | 22   | Redis: HASH_METADATA_PRE_GA   | len × (ttl len, string, string)                     |
//! | 22   | Valkey ≥ 80: HASH_2           | len × (string, string, 8-byte expiry ms)            |
//! | 23   | Redis: HASH_LISTPACK_EX_PRE_GA| string                                              |
//! | 24   | Redis: HASH_METADATA          | 8-byte min expiry, len × (ttl len, string, string)  |
//! | 25   | Redis: HASH_LISTPACK_EX       | 8-byte min expiry, string                           |
//!
//! Opcodes: 243 SLOT_IMPORT (Valkey 9; in Redis the same number is KEY_META of RDB 13, refused),
//! 244 SLOT_INFO, 245 FUNCTION2, 246 FUNCTION_PRE_GA (refused), 247 MODULE_AUX (skipped),
//! 248 IDLE, 249 FREQ, 250 AUX, 251 RESIZEDB, 252 EXPIRETIME_MS, 253 EXPIRETIME, 254 SELECTDB,
//! 255 EOF.

use std::fmt;
use std::io::{self, Read};

use crc::{Crc, Digest, Table, CRC_64_REDIS};

/// CRC-64/REDIS (Jones), the checksum of RDB files and DUMP payloads.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// The newest RDB version written by Redis that this reader understands (Redis 7.4 … 8.x).
pub const MAX_REDIS_RDB_VERSION: u16 = 12;
/// The RDB versions written with the `VALKEY` magic that this reader understands (Valkey 9.0/9.1).
pub const MIN_VALKEY_RDB_VERSION: u16 = 80;
/// See [`MIN_VALKEY_RDB_VERSION`].
pub const MAX_VALKEY_RDB_VERSION: u16 = 80;

// Value types (src/rdb.h).
const TYPE_STRING: u8 = 0;
const TYPE_LIST: u8 = 1;
const TYPE_SET: u8 = 2;
const TYPE_ZSET: u8 = 3;
const TYPE_HASH: u8 = 4;
const TYPE_ZSET_2: u8 = 5;
const TYPE_MODULE_PRE_GA: u8 = 6;
const TYPE_MODULE_2: u8 = 7;
const TYPE_HASH_ZIPMAP: u8 = 9;
const TYPE_LIST_ZIPLIST: u8 = 10;
const TYPE_SET_INTSET: u8 = 11;
const TYPE_ZSET_ZIPLIST: u8 = 12;
const TYPE_HASH_ZIPLIST: u8 = 13;
const TYPE_LIST_QUICKLIST: u8 = 14;
const TYPE_STREAM_LISTPACKS: u8 = 15;
const TYPE_HASH_LISTPACK: u8 = 16;
const TYPE_ZSET_LISTPACK: u8 = 17;
const TYPE_LIST_QUICKLIST_2: u8 = 18;
const TYPE_STREAM_LISTPACKS_2: u8 = 19;
const TYPE_SET_LISTPACK: u8 = 20;
const TYPE_STREAM_LISTPACKS_3: u8 = 21;
/// Redis 7.4 RC: hash with field expiration, absolute TTLs.
const TYPE_REDIS_HASH_METADATA_PRE_GA: u8 = 22;
/// Valkey 9 (RDB 80): hash with field expiration. Same number as the Redis type above.
const TYPE_VALKEY_HASH_2: u8 = 22;
const TYPE_REDIS_HASH_LISTPACK_EX_PRE_GA: u8 = 23;
const TYPE_REDIS_HASH_METADATA: u8 = 24;
const TYPE_REDIS_HASH_LISTPACK_EX: u8 = 25;

// Opcodes (src/rdb.h).
const OPCODE_SLOT_IMPORT_OR_KEY_META: u8 = 243;
const OPCODE_SLOT_INFO: u8 = 244;
const OPCODE_FUNCTION2: u8 = 245;
const OPCODE_FUNCTION_PRE_GA: u8 = 246;
const OPCODE_MODULE_AUX: u8 = 247;
const OPCODE_IDLE: u8 = 248;
const OPCODE_FREQ: u8 = 249;
const OPCODE_AUX: u8 = 250;
const OPCODE_RESIZEDB: u8 = 251;
const OPCODE_EXPIRETIME_MS: u8 = 252;
const OPCODE_EXPIRETIME: u8 = 253;
const OPCODE_SELECTDB: u8 = 254;
const OPCODE_EOF: u8 = 255;

// Module value opcodes.
const MODULE_OPCODE_EOF: u64 = 0;
const MODULE_OPCODE_SINT: u64 = 1;
const MODULE_OPCODE_UINT: u64 = 2;
const MODULE_OPCODE_FLOAT: u64 = 3;
const MODULE_OPCODE_DOUBLE: u64 = 4;
const MODULE_OPCODE_STRING: u64 = 5;

// String encodings (after a length byte `11xxxxxx`).
const ENC_INT8: u64 = 0;
const ENC_INT16: u64 = 1;
const ENC_INT32: u64 = 2;
const ENC_LZF: u64 = 3;

const BUF_SIZE: usize = 256 * 1024;
/// Reads of more than this are done straight into the destination, bypassing the buffer.
const DIRECT_READ_MIN: usize = 64 * 1024;
/// Grow destination vectors at most this much ahead of the bytes actually read, so that a
/// corrupt length cannot make us allocate gigabytes up front.
const RESERVE_STEP: usize = 8 * 1024 * 1024;
/// When measuring: runs of at least this many bytes are counted without being kept, and a
/// value's complete elements once they hold this many bytes.
const MEASURE_DROP_MIN: u64 = 4 * 1024;
const MEASURE_HELD_MAX: usize = 64 * 1024;

const LOGICAL_HINT: &str =
    "set REDIS_BACKUP_MODE=logical to back up with DUMP payloads taken from \
                            the server instead of parsing its RDB snapshot";

/// Errors of [`RdbReader`].
#[derive(Debug)]
#[non_exhaustive]
pub enum RdbError {
    /// Reading the input failed.
    Io(io::Error),
    /// The input ended before the RDB's EOF opcode and checksum.
    Truncated {
        /// Bytes read before the input ended.
        offset: u64,
        /// What was being read.
        context: &'static str,
    },
    /// The CRC-64 in the trailer does not match the bytes read.
    Checksum {
        /// The checksum stored in the file.
        stored: u64,
        /// The checksum computed over the bytes read.
        computed: u64,
    },
    /// The header's magic is fine but the RDB version is one this reader does not know.
    UnsupportedVersion {
        /// `REDIS` or `VALKEY`.
        magic: &'static str,
        version: u16,
    },
    /// A key's value is of a type this reader cannot delimit.
    UnsupportedType {
        type_byte: u8,
        /// The key, lossily decoded as UTF-8 (`<unreadable>` when it could not be read).
        key: String,
        db: u64,
        rdb_version: u16,
        offset: u64,
    },
    /// Something other than a key (an opcode, a pre-release format) that this reader refuses.
    Unsupported(String),
    /// The bytes do not follow the RDB format.
    Malformed(String),
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RdbError::Io(e) => write!(f, "reading the RDB stream failed: {e}"),
            RdbError::Truncated { offset, context } => write!(
                f,
                "the RDB stream ended after {offset} bytes while reading {context}, before its \
                 end-of-file marker: the snapshot is incomplete (the server or the connection \
                 stopped mid-transfer); run the backup again"
            ),
            RdbError::Checksum { stored, computed } => write!(
                f,
                "the RDB checksum does not match (stored {stored:#018x}, computed \
                 {computed:#018x}): the snapshot was corrupted in transfer; run the backup again"
            ),
            RdbError::UnsupportedVersion { magic, version } => write!(
                f,
                "the server sent an RDB snapshot of format version {version} ({magic} magic), \
                 which this runner does not know (it reads REDIS versions up to \
                 {MAX_REDIS_RDB_VERSION} and VALKEY version {MIN_VALKEY_RDB_VERSION}); use the \
                 runner image built for this server version, or {LOGICAL_HINT}"
            ),
            RdbError::UnsupportedType {
                type_byte,
                key,
                db,
                rdb_version,
                offset,
            } => write!(
                f,
                "key {key:?} in db {db} has RDB value type {type_byte} ({}) that this runner \
                 cannot parse in RDB version {rdb_version} (at byte {offset}); {LOGICAL_HINT}",
                type_name(*type_byte)
            ),
            RdbError::Unsupported(msg) => write!(f, "{msg}; {LOGICAL_HINT}"),
            RdbError::Malformed(msg) => write!(f, "the RDB stream is malformed: {msg}"),
        }
    }
}

impl std::error::Error for RdbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RdbError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for RdbError {
    fn from(e: io::Error) -> Self {
        RdbError::Io(e)
    }
}

/// One item of an RDB stream, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RdbItem {
    /// An AUX field (`redis-ver`, `ctime`, `repl-id`, …), decoded strings.
    Aux { key: Vec<u8>, value: Vec<u8> },
    /// SELECTDB opcode: the following keys are in this db.
    SelectDb(u64),
    /// A function library's code (FUNCTION2 opcode), as given to `FUNCTION LOAD`.
    Function(Vec<u8>),
    /// A key and its value.
    Key(RdbKey),
}

/// A key, with its value's serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct RdbKey {
    /// Current db from the last SELECTDB (0 if none).
    pub db: u64,
    /// The key, decoded.
    pub key: Vec<u8>,
    /// Absolute expiry time, unix milliseconds (from EXPIRETIME_MS, or EXPIRETIME × 1000).
    pub expire_at_ms: Option<i64>,
    /// The RDB type byte.
    pub value_type: u8,
    /// The value's serialization, without the type byte.
    pub value: Vec<u8>,
}

impl fmt::Debug for RdbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RdbKey")
            .field("db", &self.db)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("expire_at_ms", &self.expire_at_ms)
            .field("value_type", &self.value_type)
            .field("value_len", &self.value.len())
            .finish()
    }
}

impl RdbKey {
    /// The DUMP payload of this key for a server that accepts `rdb_version`.
    pub fn dump_payload(&self, rdb_version: u16) -> Vec<u8> {
        dump_payload(self.value_type, &self.value, rdb_version)
    }

    /// The same payload, built in the value's own buffer (no second copy of a large value).
    pub fn into_dump_payload(self, rdb_version: u16) -> Vec<u8> {
        let mut out = self.value;
        out.reserve_exact(11);
        out.insert(0, self.value_type);
        out.extend_from_slice(&rdb_version.to_le_bytes());
        let crc = CRC64.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

/// A DUMP/RESTORE payload: the type byte, the value's serialization, the RDB version (2 bytes,
/// little endian) and the CRC-64/REDIS of all of that (8 bytes, little endian).
pub fn dump_payload(value_type: u8, value: &[u8], rdb_version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 11);
    out.push(value_type);
    out.extend_from_slice(value);
    out.extend_from_slice(&rdb_version.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The RDB version in the footer of a DUMP payload (bytes `len-10..len-8`), None if too short.
pub fn payload_version(payload: &[u8]) -> Option<u16> {
    let n = payload.len();
    if n < 10 {
        return None;
    }
    Some(u16::from_le_bytes([payload[n - 10], payload[n - 9]]))
}

/// Human name of an RDB value type, for messages.
pub fn type_name(value_type: u8) -> &'static str {
    match value_type {
        TYPE_STRING => "string",
        TYPE_LIST | TYPE_LIST_ZIPLIST | TYPE_LIST_QUICKLIST | TYPE_LIST_QUICKLIST_2 => "list",
        TYPE_SET | TYPE_SET_INTSET | TYPE_SET_LISTPACK => "set",
        TYPE_ZSET | TYPE_ZSET_2 | TYPE_ZSET_ZIPLIST | TYPE_ZSET_LISTPACK => "zset",
        TYPE_HASH | TYPE_HASH_ZIPMAP | TYPE_HASH_ZIPLIST | TYPE_HASH_LISTPACK => "hash",
        22..=25 => "hash with field expiration",
        TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => "stream",
        TYPE_MODULE_PRE_GA => "module (pre-release format)",
        TYPE_MODULE_2 => "module",
        _ => "unknown",
    }
}

const MODULE_CHARSET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The module type name (e.g. `ReJSON-RL`) of a module value (type 7, or 6), decoded from the
/// 64-bit module id that starts the value: 9 characters of 6 bits each in the top 54 bits (the
/// low 10 bits are the encoding version).
pub fn module_name(value: &[u8]) -> Option<String> {
    let mut cursor = value;
    let mut sink = Vec::new();
    let id = {
        let mut input = SliceInput(&mut cursor);
        read_len(&mut input, &mut sink).ok()?
    };
    let LenOrEnc::Len(id) = id else {
        return None;
    };
    let mut name = [0u8; 9];
    let mut rest = id >> 10;
    for slot in name.iter_mut().rev() {
        *slot = MODULE_CHARSET[(rest & 63) as usize];
        rest >>= 6;
    }
    Some(String::from_utf8_lossy(&name).into_owned())
}

/// Which family wrote the file; some type numbers mean different things in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Redis,
    Valkey,
}

/// The buffered, checksumming input.
struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Bytes of `buf[..hashed]` are already in `crc`.
    hashed: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    crc: Digest<'static, u64, Table<16>>,
    /// While a value is measured rather than kept ([`RdbReader::next_measured`]): large runs of
    /// its bytes, and the elements already complete, are counted in `dropped` instead of kept.
    measuring: bool,
    dropped: u64,
}

impl<R: Read> Input<R> {
    fn new(inner: R) -> Self {
        Input {
            inner,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            hashed: 0,
            base: 0,
            crc: CRC64.digest(),
            measuring: false,
            dropped: 0,
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Hashes everything consumed so far.
    fn hash_consumed(&mut self) {
        if self.pos > self.hashed {
            self.crc.update(&self.buf[self.hashed..self.pos]);
            self.hashed = self.pos;
        }
    }

    fn read_inner(&mut self, dst: &mut [u8]) -> Result<usize, RdbError> {
        loop {
            match self.inner.read(dst) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RdbError::Io(e)),
            }
        }
    }

    /// Refills an exhausted buffer; false at end of input.
    fn fill(&mut self) -> Result<bool, RdbError> {
        debug_assert_eq!(self.pos, self.end);
        self.hash_consumed();
        self.base += self.end as u64;
        self.pos = 0;
        self.end = 0;
        self.hashed = 0;
        let n = {
            let Input { inner, buf, .. } = self;
            loop {
                match inner.read(buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(RdbError::Io(e)),
                }
            }
        };
        self.end = n;
        Ok(n > 0)
    }

    fn truncated(&self, context: &'static str) -> RdbError {
        RdbError::Truncated {
            offset: self.offset(),
            context,
        }
    }

    fn u8(&mut self, context: &'static str) -> Result<u8, RdbError> {
        if self.pos == self.end && !self.fill()? {
            return Err(self.truncated(context));
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// Appends exactly `n` bytes to `out` (counts them when measuring a large run).
    fn copy(&mut self, out: &mut Vec<u8>, n: u64, context: &'static str) -> Result<(), RdbError> {
        if self.measuring && n >= MEASURE_DROP_MIN {
            // Nothing reads a run this long back (only short integers are), so it and what
            // precedes it in `out` are counted, not kept.
            self.dropped += out.len() as u64 + n;
            out.clear();
            return self.skip(n, context);
        }
        let mut left = n;
        while left > 0 {
            if self.pos < self.end {
                let take = (self.end - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
                self.pos += take;
                left -= take as u64;
                continue;
            }
            if left >= DIRECT_READ_MIN as u64 {
                // Large: read straight into `out`, hashing as we go.
                self.hash_consumed();
                let want = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(RESERVE_STEP);
                let start = out.len();
                out.resize(start + want, 0);
                let got = self.read_inner(&mut out[start..])?;
                out.truncate(start + got);
                if got == 0 {
                    return Err(self.truncated(context));
                }
                self.crc.update(&out[start..]);
                self.base += got as u64;
                left -= got as u64;
                continue;
            }
            if !self.fill()? {
                return Err(self.truncated(context));
            }
        }
        Ok(())
    }

    /// Consumes exactly `n` bytes (still checksummed) without keeping them.
    fn skip(&mut self, n: u64, context: &'static str) -> Result<(), RdbError> {
        let mut left = n;
        while left > 0 {
            if self.pos < self.end {
                let take = (self.end - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                self.pos += take;
                left -= take as u64;
            } else if !self.fill()? {
                return Err(self.truncated(context));
            }
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, context: &'static str) -> Result<[u8; N], RdbError> {
        let mut a = [0u8; N];
        if self.end - self.pos >= N {
            a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
            self.pos += N;
        } else {
            for b in a.iter_mut() {
                *b = self.u8(context)?;
            }
        }
        Ok(a)
    }
}

/// Byte source for the length/string helpers: either the file (bytes are also copied to a sink)
/// or a slice (for [`module_name`]).
trait Source {
    fn u8(&mut self, context: &'static str) -> Result<u8, RdbError>;
    fn copy(&mut self, out: &mut Vec<u8>, n: u64, context: &'static str) -> Result<(), RdbError>;
    /// Called between the elements of a value: when measuring, the complete elements held in
    /// `out` may be counted and dropped.
    fn element_done(&mut self, _out: &mut Vec<u8>) {}
}

impl<R: Read> Source for Input<R> {
    fn u8(&mut self, context: &'static str) -> Result<u8, RdbError> {
        Input::u8(self, context)
    }
    fn copy(&mut self, out: &mut Vec<u8>, n: u64, context: &'static str) -> Result<(), RdbError> {
        Input::copy(self, out, n, context)
    }
    fn element_done(&mut self, out: &mut Vec<u8>) {
        if self.measuring && out.len() >= MEASURE_HELD_MAX {
            self.dropped += out.len() as u64;
            out.clear();
        }
    }
}

struct SliceInput<'a, 'b>(&'a mut &'b [u8]);

impl Source for SliceInput<'_, '_> {
    fn u8(&mut self, context: &'static str) -> Result<u8, RdbError> {
        let (&b, rest) = self
            .0
            .split_first()
            .ok_or(RdbError::Truncated { offset: 0, context })?;
        *self.0 = rest;
        Ok(b)
    }
    fn copy(&mut self, out: &mut Vec<u8>, n: u64, context: &'static str) -> Result<(), RdbError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if self.0.len() < n {
            return Err(RdbError::Truncated { offset: 0, context });
        }
        out.extend_from_slice(&self.0[..n]);
        *self.0 = &self.0[n..];
        Ok(())
    }
}

enum LenOrEnc {
    Len(u64),
    /// A special string encoding (`11xxxxxx`): the low 6 bits.
    Enc(u64),
}

/// Reads an RDB length, appending its raw bytes to `out`.
fn read_len(src: &mut impl Source, out: &mut Vec<u8>) -> Result<LenOrEnc, RdbError> {
    let b = src.u8("a length")?;
    out.push(b);
    match b >> 6 {
        0 => Ok(LenOrEnc::Len(u64::from(b & 0x3f))),
        1 => {
            let b2 = src.u8("a length")?;
            out.push(b2);
            Ok(LenOrEnc::Len((u64::from(b & 0x3f) << 8) | u64::from(b2)))
        }
        3 => Ok(LenOrEnc::Enc(u64::from(b & 0x3f))),
        _ => {
            let n = match b {
                0x80 => 4,
                0x81 => 8,
                _ => {
                    return Err(RdbError::Malformed(format!(
                        "unknown length encoding byte {b:#04x}"
                    )))
                }
            };
            let start = out.len();
            src.copy(out, n, "a length")?;
            let v = out[start..]
                .iter()
                .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            Ok(LenOrEnc::Len(v))
        }
    }
}

/// Reads a plain length (a string encoding here is an error).
fn read_plain_len(
    src: &mut impl Source,
    out: &mut Vec<u8>,
    what: &'static str,
) -> Result<u64, RdbError> {
    match read_len(src, out)? {
        LenOrEnc::Len(n) => Ok(n),
        LenOrEnc::Enc(e) => Err(RdbError::Malformed(format!(
            "expected a length for {what}, found string encoding {e}"
        ))),
    }
}

/// The shape of a string as read: its raw bytes are in the sink; this says how to decode them.
enum StrForm {
    /// Plain bytes: the last `len` bytes of the sink.
    Plain(usize),
    Int(i64),
    /// LZF: the last `clen` bytes of the sink decompress to `ulen` bytes.
    Lzf {
        clen: usize,
        ulen: usize,
    },
}

/// Reads an RDB string (any encoding), appending its raw bytes to `out`.
fn read_string(src: &mut impl Source, out: &mut Vec<u8>) -> Result<StrForm, RdbError> {
    match read_len(src, out)? {
        LenOrEnc::Len(n) => {
            src.copy(out, n, "a string")?;
            Ok(StrForm::Plain(n as usize))
        }
        LenOrEnc::Enc(ENC_INT8) => {
            let b = src.u8("an integer string")?;
            out.push(b);
            Ok(StrForm::Int(i64::from(b as i8)))
        }
        LenOrEnc::Enc(ENC_INT16) => {
            let start = out.len();
            src.copy(out, 2, "an integer string")?;
            Ok(StrForm::Int(i64::from(i16::from_le_bytes([
                out[start],
                out[start + 1],
            ]))))
        }
        LenOrEnc::Enc(ENC_INT32) => {
            let start = out.len();
            src.copy(out, 4, "an integer string")?;
            let mut a = [0u8; 4];
            a.copy_from_slice(&out[start..start + 4]);
            Ok(StrForm::Int(i64::from(i32::from_le_bytes(a))))
        }
        LenOrEnc::Enc(ENC_LZF) => {
            let clen = read_plain_len(src, out, "an LZF string")?;
            let ulen = read_plain_len(src, out, "an LZF string")?;
            src.copy(out, clen, "an LZF string")?;
            Ok(StrForm::Lzf {
                clen: clen as usize,
                ulen: usize::try_from(ulen).map_err(|_| {
                    RdbError::Malformed(format!("LZF string of impossible length {ulen}"))
                })?,
            })
        }
        LenOrEnc::Enc(e) => Err(RdbError::Malformed(format!("unknown string encoding {e}"))),
    }
}

/// Reads an RDB string and returns its decoded bytes.
fn read_decoded_string(src: &mut impl Source) -> Result<Vec<u8>, RdbError> {
    let mut raw = Vec::new();
    match read_string(src, &mut raw)? {
        StrForm::Plain(n) => {
            raw.drain(..raw.len() - n);
            Ok(raw)
        }
        StrForm::Int(v) => Ok(v.to_string().into_bytes()),
        StrForm::Lzf { clen, ulen } => lzf_decompress(&raw[raw.len() - clen..], ulen),
    }
}

/// LZF decompression (the format of liblzf's `lzf_decompress`, as used by Redis).
fn lzf_decompress(input: &[u8], out_len: usize) -> Result<Vec<u8>, RdbError> {
    let bad = || RdbError::Malformed("invalid LZF-compressed string".to_string());
    let mut out: Vec<u8> = Vec::with_capacity(out_len.min(RESERVE_STEP));
    let mut ip = 0;
    while ip < input.len() {
        let ctrl = usize::from(input[ip]);
        ip += 1;
        if ctrl < 32 {
            let n = ctrl + 1;
            let lit = input.get(ip..ip + n).ok_or_else(bad)?;
            if out.len() + n > out_len {
                return Err(bad());
            }
            out.extend_from_slice(lit);
            ip += n;
        } else {
            let mut len = ctrl >> 5;
            if len == 7 {
                len += usize::from(*input.get(ip).ok_or_else(bad)?);
                ip += 1;
            }
            len += 2;
            let low = usize::from(*input.get(ip).ok_or_else(bad)?);
            ip += 1;
            let back = ((ctrl & 0x1f) << 8) + low + 1;
            if back > out.len() || out.len() + len > out_len {
                return Err(bad());
            }
            let from = out.len() - back;
            for i in 0..len {
                let b = out[from + i];
                out.push(b);
            }
        }
    }
    if out.len() != out_len {
        return Err(bad());
    }
    Ok(out)
}

/// Streaming reader of an RDB file. It buffers its input itself: wrapping the reader in a
/// `BufReader` is unnecessary.
pub struct RdbReader<R: Read> {
    input: Input<R>,
    version: u16,
    flavor: Flavor,
    db: u64,
    done: bool,
    skipped_module_aux: Vec<String>,
    /// Serialized length of the last key's value read by [`RdbReader::next_measured`].
    measured_len: u64,
}

impl<R: Read> RdbReader<R> {
    /// Reads and checks the magic and version: `REDIS` + 4 digits (versions 1 to 12) or `VALKEY`
    /// + 3 digits (version 80).
    pub fn new(reader: R) -> Result<Self, RdbError> {
        let mut input = Input::new(reader);
        let mut head = [0u8; 9];
        for (i, b) in head.iter_mut().enumerate() {
            *b = input.u8("the header").map_err(|e| match e {
                RdbError::Truncated { .. } if i == 0 => RdbError::Malformed(
                    "the RDB stream is empty (the server sent no snapshot)".to_string(),
                ),
                e => e,
            })?;
        }
        let (flavor, magic, digits): (Flavor, &'static str, &[u8]) = if &head[..5] == b"REDIS" {
            (Flavor::Redis, "REDIS", &head[5..])
        } else if &head[..6] == b"VALKEY" {
            (Flavor::Valkey, "VALKEY", &head[6..])
        } else {
            return Err(RdbError::Malformed(format!(
                "not an RDB snapshot: it starts with {:?} instead of REDIS or VALKEY",
                String::from_utf8_lossy(&head)
            )));
        };
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(RdbError::Malformed(format!(
                "bad RDB header {:?}: the version is not a number",
                String::from_utf8_lossy(&head)
            )));
        }
        let version = digits
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
        let supported = match flavor {
            Flavor::Redis => (1..=MAX_REDIS_RDB_VERSION).contains(&version),
            Flavor::Valkey => (MIN_VALKEY_RDB_VERSION..=MAX_VALKEY_RDB_VERSION).contains(&version),
        };
        if !supported {
            return Err(RdbError::UnsupportedVersion { magic, version });
        }
        Ok(RdbReader {
            input,
            version,
            flavor,
            db: 0,
            done: false,
            skipped_module_aux: Vec::new(),
            measured_len: 0,
        })
    }

    /// The RDB version from the header.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// True if the header's magic was `VALKEY`.
    pub fn is_valkey_magic(&self) -> bool {
        self.flavor == Flavor::Valkey
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// Module type names of the MODULE_AUX sections skipped so far (module-global data that
    /// `RESTORE` cannot carry).
    pub fn skipped_module_aux(&self) -> &[String] {
        &self.skipped_module_aux
    }

    /// The next item; `Ok(None)` after the EOF opcode once the trailing checksum was verified
    /// (a zero checksum means checksums were disabled and is accepted). Data after it is
    /// ignored.
    pub fn next_item(&mut self) -> Result<Option<RdbItem>, RdbError> {
        self.read_item(false)
    }

    /// Like [`RdbReader::next_item`], without keeping values: a key's `value` is left empty
    /// (or partial) and the length of its serialization comes alongside (0 for other items).
    /// Memory stays small whatever the values' sizes; the checksum is still verified.
    pub fn next_measured(&mut self) -> Result<Option<(RdbItem, u64)>, RdbError> {
        self.measured_len = 0;
        let item = self.read_item(true)?;
        Ok(item.map(|i| (i, self.measured_len)))
    }

    fn read_item(&mut self, measure: bool) -> Result<Option<RdbItem>, RdbError> {
        if self.done {
            return Ok(None);
        }
        let mut expire_at_ms: Option<i64> = None;
        let mut scratch = Vec::new();
        loop {
            let op_offset = self.input.offset();
            let op = self.input.u8("the next opcode or key type")?;
            scratch.clear();
            match op {
                OPCODE_EOF => {
                    self.input.hash_consumed();
                    let computed = self.input.crc.clone().finalize();
                    if self.version >= 5 {
                        let stored = u64::from_le_bytes(self.input.array::<8>("the checksum")?);
                        if stored != 0 && stored != computed {
                            return Err(RdbError::Checksum { stored, computed });
                        }
                    }
                    self.done = true;
                    return Ok(None);
                }
                OPCODE_SELECTDB => {
                    let db = read_plain_len(&mut self.input, &mut scratch, "SELECTDB")?;
                    self.db = db;
                    return Ok(Some(RdbItem::SelectDb(db)));
                }
                OPCODE_EXPIRETIME_MS => {
                    expire_at_ms =
                        Some(i64::from_le_bytes(self.input.array::<8>("an expire time")?));
                }
                OPCODE_EXPIRETIME => {
                    let secs = i32::from_le_bytes(self.input.array::<4>("an expire time")?);
                    expire_at_ms = Some(i64::from(secs) * 1000);
                }
                OPCODE_RESIZEDB => {
                    read_plain_len(&mut self.input, &mut scratch, "RESIZEDB")?;
                    read_plain_len(&mut self.input, &mut scratch, "RESIZEDB")?;
                }
                OPCODE_AUX => {
                    let key = read_decoded_string(&mut self.input)?;
                    let value = read_decoded_string(&mut self.input)?;
                    return Ok(Some(RdbItem::Aux { key, value }));
                }
                OPCODE_FREQ => {
                    self.input.u8("an LFU frequency")?;
                }
                OPCODE_IDLE => {
                    read_plain_len(&mut self.input, &mut scratch, "an LRU idle time")?;
                }
                OPCODE_MODULE_AUX => {
                    let id = read_plain_len(&mut self.input, &mut scratch, "MODULE_AUX")?;
                    let when_opcode = read_plain_len(&mut self.input, &mut scratch, "MODULE_AUX")?;
                    if when_opcode != MODULE_OPCODE_UINT {
                        return Err(RdbError::Malformed(format!(
                            "MODULE_AUX at byte {op_offset} has a bad 'when' opcode {when_opcode}"
                        )));
                    }
                    read_plain_len(&mut self.input, &mut scratch, "MODULE_AUX")?;
                    copy_module_opcodes(&mut self.input, &mut scratch)?;
                    let mut idbytes = Vec::new();
                    idbytes.push(0x81);
                    idbytes.extend_from_slice(&id.to_be_bytes());
                    let name = module_name(&idbytes).unwrap_or_default();
                    if !self.skipped_module_aux.contains(&name) {
                        self.skipped_module_aux.push(name);
                    }
                }
                OPCODE_FUNCTION_PRE_GA => {
                    return Err(RdbError::Unsupported(
                        "the snapshot holds functions in the pre-release format of Redis \
                         7.0 release candidates (opcode 246)"
                            .to_string(),
                    ));
                }
                OPCODE_FUNCTION2 => {
                    let code = read_decoded_string(&mut self.input)?;
                    return Ok(Some(RdbItem::Function(code)));
                }
                OPCODE_SLOT_INFO => {
                    for _ in 0..3 {
                        read_plain_len(&mut self.input, &mut scratch, "SLOT_INFO")?;
                    }
                }
                OPCODE_SLOT_IMPORT_OR_KEY_META if self.flavor == Flavor::Valkey => {
                    // SLOT_IMPORT: job name, number of ranges, (start, end) per range.
                    read_string(&mut self.input, &mut scratch)?;
                    let n = read_plain_len(&mut self.input, &mut scratch, "SLOT_IMPORT")?;
                    for _ in 0..n.saturating_mul(2) {
                        read_plain_len(&mut self.input, &mut scratch, "SLOT_IMPORT")?;
                    }
                }
                OPCODE_SLOT_IMPORT_OR_KEY_META..=u8::MAX => {
                    return Err(RdbError::Unsupported(format!(
                        "the snapshot has RDB opcode {op} at byte {op_offset}, unknown in RDB \
                         version {} ({})",
                        self.version,
                        if self.flavor == Flavor::Valkey {
                            "VALKEY"
                        } else {
                            "REDIS"
                        }
                    )));
                }
                value_type => {
                    let key = match read_decoded_string(&mut self.input) {
                        Ok(k) => k,
                        // The type is unknown, so what follows may not even be a key: report the
                        // type, not the string error.
                        Err(_) if !self.is_known_type(value_type) => {
                            return Err(self.unsupported_type(value_type, None, op_offset));
                        }
                        Err(e) => return Err(e),
                    };
                    if !self.is_known_type(value_type) {
                        return Err(self.unsupported_type(value_type, Some(&key), op_offset));
                    }
                    let mut value = Vec::new();
                    self.input.measuring = measure;
                    self.input.dropped = 0;
                    let copied = self.copy_value(value_type, &key, op_offset, &mut value);
                    self.input.measuring = false;
                    copied?;
                    self.measured_len = self.input.dropped + value.len() as u64;
                    return Ok(Some(RdbItem::Key(RdbKey {
                        db: self.db,
                        key,
                        expire_at_ms,
                        value_type,
                        value,
                    })));
                }
            }
        }
    }

    fn unsupported_type(&self, type_byte: u8, key: Option<&[u8]>, offset: u64) -> RdbError {
        RdbError::UnsupportedType {
            type_byte,
            key: key.map_or_else(
                || "<unreadable>".to_string(),
                |k| String::from_utf8_lossy(k).into_owned(),
            ),
            db: self.db,
            rdb_version: self.version,
            offset,
        }
    }

    fn is_known_type(&self, t: u8) -> bool {
        match t {
            0..=5 | TYPE_MODULE_2 | 9..=21 => true,
            22..=25 if self.flavor == Flavor::Redis => true,
            TYPE_VALKEY_HASH_2 => self.flavor == Flavor::Valkey,
            _ => false,
        }
    }

    /// Copies the serialization of a value of type `t` into `out`.
    fn copy_value(
        &mut self,
        t: u8,
        key: &[u8],
        type_offset: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), RdbError> {
        let input = &mut self.input;
        match t {
            TYPE_STRING | TYPE_HASH_ZIPMAP | TYPE_LIST_ZIPLIST | TYPE_SET_INTSET
            | TYPE_ZSET_ZIPLIST | TYPE_HASH_ZIPLIST | TYPE_HASH_LISTPACK | TYPE_ZSET_LISTPACK
            | TYPE_SET_LISTPACK => {
                read_string(input, out)?;
            }
            TYPE_LIST | TYPE_SET | TYPE_LIST_QUICKLIST => {
                let n = read_plain_len(input, out, "a collection length")?;
                for _ in 0..n {
                    input.element_done(out);
                    read_string(input, out)?;
                }
            }
            TYPE_ZSET => {
                let n = read_plain_len(input, out, "a zset length")?;
                for _ in 0..n {
                    input.element_done(out);
                    read_string(input, out)?;
                    // Score: 1-byte length, 253 NaN, 254 +inf, 255 -inf, else that many chars.
                    let l = input.u8("a zset score")?;
                    out.push(l);
                    if l < 253 {
                        input.copy(out, u64::from(l), "a zset score")?;
                    }
                }
            }
            TYPE_ZSET_2 => {
                let n = read_plain_len(input, out, "a zset length")?;
                for _ in 0..n {
                    input.element_done(out);
                    read_string(input, out)?;
                    input.copy(out, 8, "a zset score")?;
                }
            }
            TYPE_HASH => {
                let n = read_plain_len(input, out, "a hash length")?;
                for _ in 0..n {
                    input.element_done(out);
                    read_string(input, out)?;
                    read_string(input, out)?;
                }
            }
            TYPE_LIST_QUICKLIST_2 => {
                let n = read_plain_len(input, out, "a quicklist length")?;
                for _ in 0..n {
                    input.element_done(out);
                    let container = read_plain_len(input, out, "a quicklist node container")?;
                    if container != 1 && container != 2 {
                        return Err(RdbError::Malformed(format!(
                            "quicklist node of key {:?} has unknown container {container}",
                            String::from_utf8_lossy(key)
                        )));
                    }
                    read_string(input, out)?;
                }
            }
            TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => {
                copy_stream(input, t, out)?;
            }
            TYPE_MODULE_2 => {
                read_plain_len(input, out, "a module id")?;
                copy_module_opcodes(input, out)?;
            }
            TYPE_VALKEY_HASH_2 if self.flavor == Flavor::Valkey => {
                let n = read_plain_len(input, out, "a hash length")?;
                for _ in 0..n {
                    input.element_done(out);
                    read_string(input, out)?;
                    read_string(input, out)?;
                    input.copy(out, 8, "a hash field expiry")?;
                }
            }
            TYPE_REDIS_HASH_METADATA_PRE_GA | TYPE_REDIS_HASH_METADATA
                if self.flavor == Flavor::Redis =>
            {
                if t == TYPE_REDIS_HASH_METADATA {
                    input.copy(out, 8, "a hash minimum expiry")?;
                }
                let n = read_plain_len(input, out, "a hash length")?;
                for _ in 0..n {
                    input.element_done(out);
                    read_plain_len(input, out, "a hash field TTL")?;
                    read_string(input, out)?;
                    read_string(input, out)?;
                }
            }
            TYPE_REDIS_HASH_LISTPACK_EX_PRE_GA | TYPE_REDIS_HASH_LISTPACK_EX
                if self.flavor == Flavor::Redis =>
            {
                if t == TYPE_REDIS_HASH_LISTPACK_EX {
                    input.copy(out, 8, "a hash minimum expiry")?;
                }
                read_string(input, out)?;
            }
            _ => return Err(self.unsupported_type(t, Some(key), type_offset)),
        }
        Ok(())
    }
}

/// Module value opcodes until MODULE_OPCODE_EOF (`rdbLoadCheckModuleValue`).
fn copy_module_opcodes(src: &mut impl Source, out: &mut Vec<u8>) -> Result<(), RdbError> {
    loop {
        src.element_done(out);
        match read_plain_len(src, out, "a module opcode")? {
            MODULE_OPCODE_EOF => return Ok(()),
            MODULE_OPCODE_SINT | MODULE_OPCODE_UINT => {
                read_plain_len(src, out, "a module integer")?;
            }
            MODULE_OPCODE_FLOAT => src.copy(out, 4, "a module float")?,
            MODULE_OPCODE_DOUBLE => src.copy(out, 8, "a module double")?,
            MODULE_OPCODE_STRING => {
                read_string(src, out)?;
            }
            other => {
                return Err(RdbError::Malformed(format!(
                    "unknown module value opcode {other}"
                )))
            }
        }
    }
}

/// A stream value (`rdbLoadObject`, types 15, 19 and 21).
fn copy_stream(src: &mut impl Source, t: u8, out: &mut Vec<u8>) -> Result<(), RdbError> {
    let v2 = t >= TYPE_STREAM_LISTPACKS_2;
    let v3 = t >= TYPE_STREAM_LISTPACKS_3;
    // Listpacks: (master id as a 16-byte string, listpack string) each.
    let listpacks = read_plain_len(src, out, "stream listpacks")?;
    for _ in 0..listpacks {
        src.element_done(out);
        read_string(src, out)?;
        read_string(src, out)?;
    }
    // Length, last id (ms, seq); v2: first id, max deleted id, entries added.
    let meta = if v2 { 3 + 5 } else { 3 };
    for _ in 0..meta {
        read_plain_len(src, out, "stream metadata")?;
    }
    let groups = read_plain_len(src, out, "stream consumer groups")?;
    for _ in 0..groups {
        src.element_done(out);
        read_string(src, out)?; // name
        read_plain_len(src, out, "a consumer group id")?;
        read_plain_len(src, out, "a consumer group id")?;
        if v2 {
            read_plain_len(src, out, "a consumer group offset")?;
        }
        // Global PEL: raw 16-byte id, 8-byte delivery time, delivery count.
        let pel = read_plain_len(src, out, "a consumer group PEL")?;
        for _ in 0..pel {
            src.element_done(out);
            src.copy(out, 16 + 8, "a PEL entry")?;
            read_plain_len(src, out, "a PEL delivery count")?;
        }
        let consumers = read_plain_len(src, out, "stream consumers")?;
        for _ in 0..consumers {
            src.element_done(out);
            read_string(src, out)?; // name
            src.copy(out, 8, "a consumer seen time")?;
            if v3 {
                src.copy(out, 8, "a consumer active time")?;
            }
            let pel = read_plain_len(src, out, "a consumer PEL")?;
            src.copy(out, pel.saturating_mul(16), "a consumer PEL")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an RDB stream: header, `body`, EOF opcode, checksum.
    fn rdb(header: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = header.to_vec();
        v.extend_from_slice(body);
        v.push(OPCODE_EOF);
        let crc = CRC64.checksum(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<RdbItem>, RdbError> {
        let mut r = RdbReader::new(bytes)?;
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        Ok(items)
    }

    fn keys(items: &[RdbItem]) -> Vec<&RdbKey> {
        items
            .iter()
            .filter_map(|i| match i {
                RdbItem::Key(k) => Some(k),
                _ => None,
            })
            .collect()
    }

    /// A reader that returns one byte per call, to exercise buffer refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn in_place_payload_matches_the_copy() {
        let key = RdbKey {
            db: 0,
            key: b"k".to_vec(),
            expire_at_ms: None,
            value_type: 0,
            value: vec![3, b'a', b'b', b'c'],
        };
        assert_eq!(key.clone().into_dump_payload(10), key.dump_payload(10));
    }

    #[test]
    fn crc_known_vector() {
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn dump_payload_footer_and_crc() {
        // DUMP of SET k "hello" on Redis 7.0 (RDB 10).
        let p = dump_payload(0, b"\x05hello", 10);
        assert_eq!(&p[..7], b"\x00\x05hello");
        assert_eq!(&p[7..9], &[10, 0]);
        assert_eq!(payload_version(&p), Some(10));
        let crc = u64::from_le_bytes(p[9..17].try_into().unwrap());
        assert_eq!(crc, CRC64.checksum(&p[..9]));
        assert_eq!(p.len(), 17);
        assert_eq!(payload_version(&p[..9]), None);
        let k = RdbKey {
            db: 0,
            key: b"k".to_vec(),
            expire_at_ms: None,
            value_type: 0,
            value: b"\x05hello".to_vec(),
        };
        assert_eq!(k.dump_payload(10), p);
    }

    #[test]
    fn header_versions() {
        assert_eq!(
            RdbReader::new(&rdb(b"REDIS0011", b"")[..])
                .unwrap()
                .version(),
            11
        );
        assert_eq!(
            RdbReader::new(&rdb(b"REDIS0012", b"")[..])
                .unwrap()
                .version(),
            12
        );
        let valkey = rdb(b"VALKEY080", b"");
        let v = RdbReader::new(&valkey[..]).unwrap();
        assert_eq!(v.version(), 80);
        assert!(v.is_valkey_magic());
        for bad in [&b"REDIS0013"[..], b"VALKEY081", b"VALKEY011"] {
            let err = RdbReader::new(&rdb(bad, b"")[..]).err().unwrap();
            assert!(matches!(err, RdbError::UnsupportedVersion { .. }), "{err}");
        }
        let err = RdbReader::new(&b"HELLO0011"[..]).err().unwrap();
        assert!(matches!(err, RdbError::Malformed(_)), "{err}");
        let err = RdbReader::new(&b"REDIS00x1"[..]).err().unwrap();
        assert!(matches!(err, RdbError::Malformed(_)), "{err}");
        let err = RdbReader::new(&b""[..]).err().unwrap();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = RdbReader::new(&b"REDI"[..]).err().unwrap();
        assert!(matches!(err, RdbError::Truncated { .. }), "{err}");
    }

    #[test]
    fn length_encodings() {
        let cases: &[(&[u8], u64)] = &[
            (&[0x00], 0),
            (&[0x3f], 63),
            (&[0x40, 0x40], 64),
            (&[0x7f, 0xff], 16383),
            (&[0x80, 0x00, 0x00, 0x40, 0x00], 16384),
            (&[0x80, 0xff, 0xff, 0xff, 0xff], u64::from(u32::MAX)),
            (
                &[0x81, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
                1 << 32,
            ),
        ];
        for (bytes, want) in cases {
            let mut s = *bytes;
            let mut out = Vec::new();
            let got = read_plain_len(&mut SliceInput(&mut s), &mut out, "test").unwrap();
            assert_eq!(got, *want);
            assert_eq!(out, *bytes, "raw bytes are copied");
            assert!(s.is_empty());
        }
        let mut s: &[u8] = &[0x82];
        assert!(matches!(
            read_len(&mut SliceInput(&mut s), &mut Vec::new()),
            Err(RdbError::Malformed(_))
        ));
    }

    #[test]
    fn string_encodings() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"\x03abc", b"abc"),
            (b"\x00", b""),
            (&[0xc0, 0xfb], b"-5"),
            (&[0xc1, 0x39, 0x30], b"12345"),
            (&[0xc1, 0x00, 0x80], b"-32768"),
            (&[0xc2, 0x15, 0xcd, 0x5b, 0x07], b"123456789"),
            (&[0xc2, 0x00, 0x00, 0x00, 0x80], b"-2147483648"),
            // LZF: literal "a", then a back-reference of 9 bytes at distance 1.
            (
                &[0xc3, 0x05, 0x0a, 0x00, b'a', 0xe0, 0x00, 0x00],
                b"aaaaaaaaaa",
            ),
            // LZF: literal "abc", back-reference of 3 bytes at distance 3, literal "d".
            (
                &[
                    0xc3, 0x08, 0x07, 0x02, b'a', b'b', b'c', 0x20, 0x02, 0x00, b'd',
                ],
                b"abcabcd",
            ),
        ];
        for (bytes, want) in cases {
            let mut s = *bytes;
            let got = read_decoded_string(&mut SliceInput(&mut s)).unwrap();
            assert_eq!(got, *want, "{bytes:x?}");
            assert!(s.is_empty());
            let mut s = *bytes;
            let mut out = Vec::new();
            read_string(&mut SliceInput(&mut s), &mut out).unwrap();
            assert_eq!(out, *bytes);
        }
        // Corrupt LZF: back-reference before the start; wrong length.
        for bad in [
            &[0xc3, 0x02, 0x05, 0x20, 0x05][..],
            &[0xc3, 0x02, 0x02, 0x00, b'a'],
        ] {
            let mut s = bad;
            assert!(matches!(
                read_decoded_string(&mut SliceInput(&mut s)),
                Err(RdbError::Malformed(_))
            ));
        }
        let mut s: &[u8] = &[0xc4];
        assert!(matches!(
            read_decoded_string(&mut SliceInput(&mut s)),
            Err(RdbError::Malformed(_))
        ));
    }

    #[test]
    fn aux_selectdb_expiry_and_keys() {
        let mut body = Vec::new();
        body.extend_from_slice(&[OPCODE_AUX, 0x09]);
        body.extend_from_slice(b"redis-ver");
        body.extend_from_slice(b"\x057.0.0");
        body.extend_from_slice(&[OPCODE_AUX, 0x0a]);
        body.extend_from_slice(b"redis-bits");
        body.extend_from_slice(&[0xc0, 0x40]);
        body.extend_from_slice(&[OPCODE_SELECTDB, 0x00, OPCODE_RESIZEDB, 0x02, 0x01]);
        // Key with ms expiry, idle and freq.
        body.push(OPCODE_EXPIRETIME_MS);
        body.extend_from_slice(&1_700_000_000_123i64.to_le_bytes());
        body.extend_from_slice(&[OPCODE_IDLE, 0x05, OPCODE_FREQ, 0x07]);
        body.extend_from_slice(b"\x00\x01a\x01x");
        // Key without expiry.
        body.extend_from_slice(b"\x00\x01b\xc0\x07");
        body.extend_from_slice(&[OPCODE_SELECTDB, 0x40, 0x10]); // db 16 (14-bit length)
        body.push(OPCODE_EXPIRETIME);
        body.extend_from_slice(&1_700_000_000i32.to_le_bytes());
        // A list with two elements.
        body.extend_from_slice(b"\x01\x01c\x02\x01p\x01q");
        // A zset (type 3) with special and plain scores.
        body.extend_from_slice(b"\x03\x01z\x02\x01m\xfe\x01n\x031.5");
        body.extend_from_slice(&[OPCODE_FUNCTION2, 0x04]);
        body.extend_from_slice(b"code");
        let bytes = rdb(b"REDIS0010", &body);
        let items = read_all(&bytes).unwrap();
        // Also read one byte at a time.
        let mut r = RdbReader::new(Trickle(&bytes)).unwrap();
        let mut items2 = Vec::new();
        while let Some(i) = r.next_item().unwrap() {
            items2.push(i);
        }
        assert_eq!(items, items2);
        assert_eq!(r.offset(), bytes.len() as u64);

        assert_eq!(
            items[0],
            RdbItem::Aux {
                key: b"redis-ver".to_vec(),
                value: b"7.0.0".to_vec()
            }
        );
        assert_eq!(
            items[1],
            RdbItem::Aux {
                key: b"redis-bits".to_vec(),
                value: b"64".to_vec()
            }
        );
        assert_eq!(items[2], RdbItem::SelectDb(0));
        let ks = keys(&items);
        assert_eq!(ks.len(), 4);
        assert_eq!(ks[0].key, b"a");
        assert_eq!(ks[0].db, 0);
        assert_eq!(ks[0].expire_at_ms, Some(1_700_000_000_123));
        assert_eq!(ks[0].value, b"\x01x");
        assert_eq!(ks[1].expire_at_ms, None, "expiry is per key");
        assert_eq!(ks[1].value, b"\xc0\x07");
        assert_eq!(ks[2].db, 16);
        assert_eq!(ks[2].expire_at_ms, Some(1_700_000_000_000));
        assert_eq!(ks[2].value_type, TYPE_LIST);
        assert_eq!(ks[2].value, b"\x02\x01p\x01q");
        assert_eq!(ks[3].value, b"\x02\x01m\xfe\x01n\x031.5");
        assert_eq!(items.last(), Some(&RdbItem::Function(b"code".to_vec())));
    }

    #[test]
    fn truncated_input() {
        let mut body = Vec::new();
        body.extend_from_slice(b"\x00\x01a\x05hello");
        let bytes = rdb(b"REDIS0011", &body);
        // Cut everywhere before the end of the checksum.
        for cut in 9..bytes.len() {
            let err = read_all(&bytes[..cut])
                .err()
                .unwrap_or_else(|| panic!("cut {cut}"));
            assert!(
                matches!(err, RdbError::Truncated { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains("incomplete"));
        }
        // Trailing data after the checksum is ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"garbage");
        assert_eq!(keys(&read_all(&longer).unwrap()).len(), 1);
    }

    #[test]
    fn checksum_checked_and_zero_accepted() {
        let body = b"\x00\x01a\x05hello";
        let mut bytes = rdb(b"REDIS0011", body);
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        let err = read_all(&bytes).err().unwrap();
        assert!(matches!(err, RdbError::Checksum { .. }), "{err}");
        // A flipped data byte is caught too.
        let mut bytes = rdb(b"REDIS0011", body);
        bytes[13] = b'j';
        assert!(matches!(read_all(&bytes), Err(RdbError::Checksum { .. })));
        // Zero: checksums disabled.
        let mut bytes = rdb(b"REDIS0011", body);
        let n = bytes.len();
        bytes[n - 8..].fill(0);
        assert_eq!(keys(&read_all(&bytes).unwrap()).len(), 1);
    }

    #[test]
    fn unknown_type_names_the_key() {
        let bytes = rdb(b"REDIS0011", b"\xfe\x03\x1a\x03foo\x00");
        let err = read_all(&bytes).err().unwrap();
        match &err {
            RdbError::UnsupportedType {
                type_byte, key, db, ..
            } => {
                assert_eq!(*type_byte, 26);
                assert_eq!(key, "foo");
                assert_eq!(*db, 3);
            }
            other => panic!("{other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("\"foo\"") && msg.contains("REDIS_BACKUP_MODE=logical"),
            "{msg}"
        );
        // Pre-GA module values are refused too.
        let bytes = rdb(b"REDIS0011", b"\x06\x03foo\x00");
        assert!(matches!(
            read_all(&bytes),
            Err(RdbError::UnsupportedType { type_byte: 6, .. })
        ));
        // Valkey's HASH_2 number (22) is a Redis type only with the REDIS magic, and 23 is
        // unknown with the VALKEY magic.
        let bytes = rdb(b"VALKEY080", b"\x17\x03foo\x00");
        assert!(matches!(
            read_all(&bytes),
            Err(RdbError::UnsupportedType { type_byte: 23, .. })
        ));
        // Unknown opcodes and the pre-GA function opcode.
        let bytes = rdb(b"REDIS0012", b"\xf3\x00");
        assert!(matches!(read_all(&bytes), Err(RdbError::Unsupported(_))));
        let bytes = rdb(b"REDIS0012", b"\xf6\x00");
        assert!(matches!(read_all(&bytes), Err(RdbError::Unsupported(_))));
    }

    fn one_key(header: &[u8], t: u8, value: &[u8]) -> RdbKey {
        let mut body = vec![t, 0x01, b'k'];
        body.extend_from_slice(value);
        let items = read_all(&rdb(header, &body)).unwrap();
        let ks = keys(&items);
        assert_eq!(ks.len(), 1);
        assert_eq!(ks[0].value, value, "type {t}");
        ks[0].clone()
    }

    #[test]
    fn collection_types() {
        let d = 1.5f64.to_le_bytes();
        let mut zset2 = vec![0x01, 0x01, b'm'];
        zset2.extend_from_slice(&d);
        one_key(b"REDIS0011", TYPE_ZSET_2, &zset2);
        one_key(b"REDIS0011", TYPE_HASH, b"\x02\x01f\x01v\x02f2\xc0\x01");
        one_key(b"REDIS0011", TYPE_SET, b"\x02\x01a\xc1\x00\x01");
        one_key(b"REDIS0011", TYPE_LIST_QUICKLIST, b"\x01\x03zip");
        one_key(
            b"REDIS0011",
            TYPE_LIST_QUICKLIST_2,
            b"\x02\x02\x02lp\x01\x05plain",
        );
        for t in [9, 10, 11, 12, 13, 16, 17, 20] {
            one_key(b"REDIS0011", t, b"\x04blob");
        }
        let mut body = vec![TYPE_LIST_QUICKLIST_2, 0x01, b'k'];
        body.extend_from_slice(b"\x01\x03\x02lp");
        assert!(matches!(
            read_all(&rdb(b"REDIS0011", &body)),
            Err(RdbError::Malformed(_))
        ));
    }

    #[test]
    fn hash_field_expiration_types() {
        // Redis 7.4 GA: HASH_METADATA = min expiry, n, (ttl, field, value)*.
        let mut v = 1_700_000_000_000u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"\x02\x00\x01a\x01b\x81\x00\x00\x00\x00\x00\x00\x00\x05\x01c\x01d");
        one_key(b"REDIS0012", TYPE_REDIS_HASH_METADATA, &v);
        one_key(
            b"REDIS0012",
            TYPE_REDIS_HASH_METADATA_PRE_GA,
            b"\x01\x00\x01a\x01b",
        );
        let mut v = 1_700_000_000_000u64.to_le_bytes().to_vec();
        v.extend_from_slice(b"\x02lp");
        one_key(b"REDIS0012", TYPE_REDIS_HASH_LISTPACK_EX, &v);
        one_key(b"REDIS0012", TYPE_REDIS_HASH_LISTPACK_EX_PRE_GA, b"\x02lp");
        // Valkey 9: HASH_2 = n, (field, value, 8-byte expiry)*.
        let mut v = b"\x01\x01a\x01b".to_vec();
        v.extend_from_slice(&(-1i64).to_le_bytes());
        one_key(b"VALKEY080", TYPE_VALKEY_HASH_2, &v);
    }

    #[test]
    fn stream_types() {
        let id16 = [0u8; 16];
        for t in [15u8, 19, 21] {
            let mut v = vec![0x01, 0x10];
            v.extend_from_slice(&id16); // master id
            v.extend_from_slice(b"\x03lp!"); // listpack
            v.extend_from_slice(b"\x03\x05\x01"); // length, last id
            if t >= 19 {
                v.extend_from_slice(b"\x05\x00\x00\x00\x03"); // first, max deleted, added
            }
            v.push(0x01); // groups
            v.extend_from_slice(b"\x02g1\x05\x00"); // name, last id
            if t >= 19 {
                v.push(0x02); // offset
            }
            v.push(0x01); // global PEL
            v.extend_from_slice(&id16);
            v.extend_from_slice(&5u64.to_le_bytes());
            v.push(0x01); // delivery count
            v.push(0x01); // consumers
            v.extend_from_slice(b"\x02c1");
            v.extend_from_slice(&7u64.to_le_bytes()); // seen
            if t >= 21 {
                v.extend_from_slice(&8u64.to_le_bytes()); // active
            }
            v.push(0x01);
            v.extend_from_slice(&id16);
            one_key(b"REDIS0011", t, &v);
        }
    }

    /// The module id of type `name` with encoding version `encver` (`moduleTypeEncodeId`).
    fn module_id(name: &str, encver: u64) -> u64 {
        let mut id = 0u64;
        for c in name.bytes() {
            let pos = MODULE_CHARSET.iter().position(|&x| x == c).unwrap() as u64;
            id = (id << 6) | pos;
        }
        (id << 10) | encver
    }

    #[test]
    fn module_values_and_names() {
        let id = module_id("ReJSON-RL", 3);
        let mut v = vec![0x81];
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(b"\x02\x05"); // UINT 5
        v.extend_from_slice(b"\x01\x81\xff\xff\xff\xff\xff\xff\xff\xff"); // SINT -1
        v.push(0x03);
        v.extend_from_slice(&1.0f32.to_le_bytes());
        v.push(0x04);
        v.extend_from_slice(&1.0f64.to_le_bytes());
        v.extend_from_slice(b"\x05\x03{}!"); // STRING
        v.push(0x00); // EOF
        let k = one_key(b"REDIS0011", TYPE_MODULE_2, &v);
        assert_eq!(module_name(&k.value).as_deref(), Some("ReJSON-RL"));
        assert_eq!(type_name(k.value_type), "module");
        assert_eq!(module_name(b""), None);

        // MODULE_AUX is skipped, and remembered.
        let mut body = vec![OPCODE_MODULE_AUX, 0x81];
        body.extend_from_slice(&module_id("graphdata", 1).to_be_bytes());
        body.extend_from_slice(b"\x02\x02"); // when_opcode UINT, when 2
        body.extend_from_slice(b"\x05\x01x\x00");
        body.extend_from_slice(b"\x00\x01a\x01b");
        let bytes = rdb(b"REDIS0011", &body);
        let mut r = RdbReader::new(&bytes[..]).unwrap();
        let Some(RdbItem::Key(k)) = r.next_item().unwrap() else {
            panic!("expected a key");
        };
        assert_eq!(k.key, b"a");
        assert!(r.next_item().unwrap().is_none());
        assert_eq!(r.skipped_module_aux(), ["graphdata".to_string()]);
    }

    #[test]
    fn measuring_keeps_no_values_and_counts_their_length() {
        let mut body = Vec::new();
        // MODULE_AUX data of a module, before the keys.
        body.extend_from_slice(&[OPCODE_MODULE_AUX, 0x81]);
        body.extend_from_slice(&module_id("graphdata", 1).to_be_bytes());
        body.extend_from_slice(b"\x02\x02\x05\x01x\x00");
        // A 300 KB string.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        body.extend_from_slice(&[TYPE_STRING, 0x03, b'b', b'i', b'g', 0x80]);
        body.extend_from_slice(&(big.len() as u32).to_be_bytes());
        body.extend_from_slice(&big);
        // A plain set of 5,000 members of 20 bytes: its elements are dropped as they complete.
        body.extend_from_slice(&[TYPE_SET, 0x03, b's', b'e', b't', 0x40 | (5000 >> 8) as u8]);
        body.push((5000 & 0xff) as u8);
        for i in 0..5000u32 {
            body.push(20);
            body.extend_from_slice(format!("member-{i:013}").as_bytes());
        }
        // A hash and a module value.
        body.extend_from_slice(b"\x04\x01h\x02\x01f\x01v\x02f2\xc0\x01");
        body.extend_from_slice(&[TYPE_MODULE_2, 0x01, b'm', 0x81]);
        body.extend_from_slice(&module_id("ReJSON-RL", 3).to_be_bytes());
        body.extend_from_slice(b"\x05\x03{}!\x00");
        let bytes = rdb(b"REDIS0011", &body);

        let kept: Vec<(Vec<u8>, u64)> = keys(&read_all(&bytes).unwrap())
            .iter()
            .map(|k| (k.key.clone(), k.value.len() as u64))
            .collect();
        assert_eq!(kept.len(), 4);
        let mut r = RdbReader::new(Trickle(&bytes)).unwrap();
        let mut measured = Vec::new();
        while let Some((item, len)) = r.next_measured().unwrap() {
            if let RdbItem::Key(k) = item {
                assert!(k.value.len() <= MEASURE_HELD_MAX + 64, "{:?}", k.key);
                measured.push((k.key, len));
            } else {
                assert_eq!(len, 0);
            }
        }
        assert_eq!(measured, kept);
        assert_eq!(r.skipped_module_aux(), ["graphdata".to_string()]);

        // The backup's summary: the largest RESTORE payload (type, value, version and CRC), and
        // the module data a restore cannot bring back, by module name.
        let summary = crate::stream::summarize(crate::RDB.name, &bytes[..]).unwrap();
        assert_eq!(summary.keys, 4);
        let largest = summary.largest.unwrap();
        assert_eq!(largest.bytes, 1 + 5 + 300_000 + 10);
        assert_eq!(largest.describe(), r#"key "big" in db 0"#);
        assert_eq!(summary.module_aux, ["graphdata".to_string()]);
        // A corrupt byte inside the large value: only the checksum notices, and it does.
        let mut bad = bytes.clone();
        bad[1000] ^= 1;
        let err = crate::stream::summarize(crate::RDB.name, &bad[..]).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn valkey_opcodes() {
        let mut body = Vec::new();
        body.extend_from_slice(&[OPCODE_SLOT_INFO, 0x05, 0x02, 0x01]);
        body.push(OPCODE_SLOT_IMPORT_OR_KEY_META);
        body.extend_from_slice(b"\x03job\x02\x00\x40\x64\x41\x00\x41\x10");
        body.extend_from_slice(b"\x00\x01a\x01b");
        let items = read_all(&rdb(b"VALKEY080", &body)).unwrap();
        assert_eq!(keys(&items).len(), 1);
    }

    #[test]
    fn large_values_stream_through() {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = vec![0x00, 0x01, b'k', 0x80];
        body.extend_from_slice(&(big.len() as u32).to_be_bytes());
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\x00\x01z\x01!");
        let bytes = rdb(b"REDIS0011", &body);
        let items = read_all(&bytes).unwrap();
        let ks = keys(&items);
        assert_eq!(&ks[0].value[5..], &big[..]);
        assert_eq!(ks[1].value, b"\x01!");
    }

    #[test]
    fn type_names() {
        assert_eq!(type_name(0), "string");
        assert_eq!(type_name(18), "list");
        assert_eq!(type_name(20), "set");
        assert_eq!(type_name(17), "zset");
        assert_eq!(type_name(16), "hash");
        assert_eq!(type_name(21), "stream");
        assert_eq!(type_name(7), "module");
        assert_eq!(type_name(99), "unknown");
    }
}
