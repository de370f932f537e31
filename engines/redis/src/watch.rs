//! Reads a backup as it streams to storage: a thread parses a copy of every chunk
//! ([`crate::stream::summarize`]) and the stream only ends once that parse succeeded, so a
//! backup this runner could not read back (a truncated or corrupt snapshot, a value type it
//! cannot delimit) fails now rather than at restore. What the parse learned goes to the
//! manifest.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::stream::{summarize, Summary};

/// Chunks waiting for the parser, at most; the stream waits for it beyond that.
const CHUNKS_QUEUED: usize = 4;

type Parse = JoinHandle<Result<Summary, String>>;

/// The dump stream, passed through unchanged while a copy is parsed.
pub struct Watched<R> {
    inner: R,
    tx: Option<SyncSender<Vec<u8>>>,
    parse: Option<Parse>,
    summary: Arc<Mutex<Option<Summary>>>,
}

/// Where the summary appears once the stream has ended.
#[derive(Clone)]
pub struct SummarySlot(Arc<Mutex<Option<Summary>>>);

impl SummarySlot {
    pub fn take(&self) -> Option<Summary> {
        self.0.lock().ok()?.take()
    }
}

impl<R: Read> Watched<R> {
    /// Watches `inner`, a backup in `format` (`redis-rdb`, `redis-logical`).
    pub fn new(inner: R, format: &str) -> io::Result<(Watched<R>, SummarySlot)> {
        let (tx, rx) = sync_channel(CHUNKS_QUEUED);
        let format = format.to_string();
        let parse = std::thread::Builder::new()
            .name("backup-check".into())
            .spawn(move || summarize(&format, ChannelReader::new(rx)))?;
        let summary = Arc::new(Mutex::new(None));
        let watched = Watched {
            inner,
            tx: Some(tx),
            parse: Some(parse),
            summary: summary.clone(),
        };
        Ok((watched, SummarySlot(summary)))
    }

    /// Waits for the parser: its summary is kept, its error becomes the stream's.
    fn finish(&mut self) -> io::Result<()> {
        self.tx = None;
        let Some(parse) = self.parse.take() else {
            return Ok(());
        };
        match parse.join() {
            Ok(Ok(summary)) => {
                if let Ok(mut slot) = self.summary.lock() {
                    *slot = Some(summary);
                }
                Ok(())
            }
            Ok(Err(e)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{e}; this runner could not restore this backup, so it is not kept"),
            )),
            Err(_) => Err(io::Error::other("the backup check stopped unexpectedly")),
        }
    }
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        if let Some(tx) = &self.tx {
            if tx.send(buf[..n].to_vec()).is_err() {
                // The parser stopped before the stream ended: at an error, or at the RDB's
                // end-of-file marker (anything after it is ignored, as a restore does).
                self.finish()?;
            }
        }
        Ok(n)
    }
}

/// The parser's side of the channel, as a reader; the end of the channel is the end of input.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Header, LogicalWriter};

    fn logical(big: usize) -> Vec<u8> {
        let header = Header {
            source: "Redis 7.0.15".into(),
            taken_at_ms: 0,
        };
        let mut out = Vec::new();
        let mut w = LogicalWriter::new(&mut out, &header).unwrap();
        w.key(0, b"small", None, b"x").unwrap();
        w.key(2, b"big", Some(7), &vec![9; big]).unwrap();
        w.finish().unwrap();
        out
    }

    /// Reads in small pieces, as the compressor does.
    fn drain<R: Read>(mut r: R) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        let mut buf = [0u8; 1000];
        loop {
            match r.read(&mut buf)? {
                0 => return Ok(all),
                n => all.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn passes_the_stream_through_and_summarizes_it() {
        let bytes = logical(100_000);
        let (watched, slot) = Watched::new(&bytes[..], crate::LOGICAL.name).unwrap();
        assert_eq!(drain(watched).unwrap(), bytes);
        let summary = slot.take().unwrap();
        assert_eq!(summary.keys, 2);
        let largest = summary.largest.unwrap();
        assert_eq!(
            (largest.bytes, largest.key),
            (100_000, Some((2, b"big".to_vec())))
        );
    }

    #[test]
    fn a_stream_that_cannot_be_read_back_fails() {
        let bytes = logical(100_000);
        let cut = &bytes[..bytes.len() - 20];
        let (watched, slot) = Watched::new(cut, crate::LOGICAL.name).unwrap();
        let err = drain(watched).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.to_string().contains("not kept"), "{err}");
        assert!(slot.take().is_none());
        // Not the format it claims to be.
        let (watched, _) = Watched::new(&bytes[..], crate::RDB.name).unwrap();
        let err = drain(watched).unwrap_err();
        assert!(err.to_string().contains("not a readable RDB"), "{err}");
    }
}
