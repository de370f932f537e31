//! Compression for the pipeline: the compressor on its own thread, a decoder type over the
//! chosen algorithm, and a reader that hashes and counts the bytes flowing through it.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::config::{Algorithm, Compression};

/// Input per zstd worker job up to `SMALL_JOBS_UP_TO`. zstd's own default (8 MiB at level 3,
/// more above) costs every worker a job's input and output: 2 MiB saves ~35 MiB of RSS at
/// level 3 for the same size and speed. Above level 3 small jobs lose ratio (5% at level 6), and
/// whoever raises the level is choosing size over memory, so zstd's default applies.
const ZSTD_JOB_SIZE: u32 = 2 << 20;
const SMALL_JOBS_UP_TO: i32 = 3;
/// Compressed bytes handed from the compressor thread to the pipeline per message, and how many
/// messages may wait: at most 1 MiB between the two.
const CHUNK: usize = 256 << 10;
const CHUNKS_QUEUED: usize = 4;

/// A synchronous compressor over `input`.
fn compressor<R: Read + Send + 'static>(
    input: R,
    c: Compression,
) -> io::Result<Box<dyn Read + Send>> {
    Ok(match c.algorithm {
        Algorithm::Zstd => {
            let buffered = io::BufReader::with_capacity(CHUNK, input);
            let mut z = zstd::stream::read::Encoder::with_buffer(buffered, c.level)?;
            // A frame checksum lets restore detect corruption while decompressing.
            z.include_checksum(true)?;
            if c.threads > 1 {
                z.multithread(c.threads)?;
                if c.level <= SMALL_JOBS_UP_TO {
                    z.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
                }
            }
            Box::new(z)
        }
        Algorithm::Gzip => Box::new(flate2::read::GzEncoder::new(
            input,
            flate2::Compression::new(c.level as u32),
        )),
        Algorithm::None => Box::new(input),
    })
}

/// Compresses `input` (the dump tool's pipe) on a thread of its own, then encrypts it when
/// `encryptor` is given, and hands the result out as an async stream. On its own thread, zstd
/// may block while its workers catch up without stalling the runtime, and it never flushes
/// early: an async encoder flushes whenever its input is momentarily empty, which with worker
/// threads cuts every job short and waits for all of them. Dropping the stream stops the thread,
/// which then closes the pipe.
pub fn compress_on_thread<R: Read + Send + 'static>(
    input: R,
    c: Compression,
    encryptor: Option<age::Encryptor>,
) -> io::Result<Compressed> {
    let mut reader = compressor(input, c)?;
    let (tx, rx) = mpsc::channel(CHUNKS_QUEUED);
    let mut sink = crate::crypto::Sink::new(ChunkSender::new(tx.clone()), encryptor)?;
    std::thread::Builder::new()
        .name("compress".into())
        .spawn(move || {
            let mut chunk = vec![0u8; CHUNK];
            let failed = loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break None,
                    Ok(n) => {
                        if let Err(e) = sink.write_all(&chunk[..n]) {
                            break Some(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => break Some(e),
                }
            };
            let end = match failed {
                Some(e) => Chunk::Failed(e),
                None => match sink.finish().and_then(ChunkSender::flush_rest) {
                    Ok(()) => Chunk::End,
                    Err(e) => Chunk::Failed(e),
                },
            };
            let _ = tx.blocking_send(end);
        })?;
    Ok(Compressed {
        rx,
        current: Bytes::new(),
        ended: false,
    })
}

/// Collects what the compressor thread writes into chunks of [`CHUNK`] bytes and sends each to
/// the pipeline, waiting while [`CHUNKS_QUEUED`] are queued. A closed channel (the pipeline
/// dropped the stream) is a write error, which stops the thread.
struct ChunkSender {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl ChunkSender {
    fn new(tx: mpsc::Sender<Chunk>) -> ChunkSender {
        ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Chunk::Data(Bytes::from(full)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the pipeline stopped"))
    }

    fn flush_rest(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the compressor thread hands over. The end of the stream is said explicitly: a thread
/// that stops without saying it (a panic) must not look like a complete stream.
enum Chunk {
    Data(Bytes),
    End,
    Failed(io::Error),
}

/// The compressed stream coming from the compressor thread.
pub struct Compressed {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl Compressed {
    #[cfg(test)]
    fn from_channel(rx: mpsc::Receiver<Chunk>) -> Compressed {
        Compressed {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl AsyncRead for Compressed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.current.is_empty() {
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Chunk::End)) => this.ended = true,
                Poll::Ready(Some(Chunk::Failed(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Chunk::Data(chunk))) => this.current = chunk,
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::other(
                        "the compressor stopped before the end of the stream (it panicked); the backup is incomplete",
                    )))
                }
            }
        }
        let n = this.current.len().min(buf.remaining());
        buf.put_slice(&this.current.split_to(n));
        Poll::Ready(Ok(()))
    }
}

pub enum Decoder<R> {
    Zstd(ZstdDecoder<R>),
    Gzip(GzipDecoder<R>),
    Plain(R),
}

impl<R: AsyncBufRead + Unpin> Decoder<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Zstd => Decoder::Zstd(ZstdDecoder::new(inner)),
            Algorithm::Gzip => Decoder::Gzip(GzipDecoder::new(inner)),
            Algorithm::None => Decoder::Plain(inner),
        }
    }

    pub fn get_ref(&self) -> &R {
        match self {
            Decoder::Zstd(r) => r.get_ref(),
            Decoder::Gzip(r) => r.get_ref(),
            Decoder::Plain(r) => r,
        }
    }

    /// The underlying reader, to drain what follows the compressed stream.
    pub fn into_inner(self) -> R {
        match self {
            Decoder::Zstd(r) => r.into_inner(),
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Plain(r) => r,
        }
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for Decoder<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Decoder::Zstd(r) => Pin::new(r).poll_read(cx, buf),
            Decoder::Gzip(r) => Pin::new(r).poll_read(cx, buf),
            Decoder::Plain(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// Counts bytes read into a shared counter (for progress lines) and optionally hashes them.
pub struct Metered<R> {
    inner: R,
    counter: Arc<AtomicU64>,
    hasher: Option<Sha256>,
    total: u64,
    read_failed: bool,
}

impl<R> Metered<R> {
    pub fn counting(inner: R, counter: Arc<AtomicU64>) -> Self {
        Metered {
            inner,
            counter,
            hasher: None,
            total: 0,
            read_failed: false,
        }
    }

    pub fn hashing(inner: R, counter: Arc<AtomicU64>) -> Self {
        Metered {
            inner,
            counter,
            hasher: Some(Sha256::new()),
            total: 0,
            read_failed: false,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Whether the underlying reader (not a consumer of these bytes) returned an error.
    pub fn read_failed(&self) -> bool {
        self.read_failed
    }

    fn record(&mut self, bytes: &[u8]) {
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        self.total += bytes.len() as u64;
        self.counter
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }

    /// Bytes read and their sha256 (hex; empty when not hashing).
    pub fn finish(self) -> (u64, String) {
        let digest = self
            .hasher
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default();
        (self.total, digest)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            this.record(&buf.filled()[before..]);
        } else if let Poll::Ready(Err(_)) = &poll {
            this.read_failed = true;
        }
        poll
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.record(&buf[..n]);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.read_failed = true;
                }
                Err(e)
            }
        }
    }
}

/// A reader that can be taken back out from under the layers built on it (a decryptor that
/// does not give its input back): reading through it after [`Detached::take`] sees the end.
pub struct Detachable<R> {
    shared: Arc<std::sync::Mutex<Option<R>>>,
}

/// The handle that takes the reader back.
pub struct Detached<R> {
    shared: Arc<std::sync::Mutex<Option<R>>>,
}

pub fn detachable<R>(inner: R) -> (Detachable<R>, Detached<R>) {
    let shared = Arc::new(std::sync::Mutex::new(Some(inner)));
    (
        Detachable {
            shared: shared.clone(),
        },
        Detached { shared },
    )
}

impl<R> Detached<R> {
    /// Calls `f` on the reader, unless it was taken.
    pub fn with<T>(&self, f: impl FnOnce(&R) -> T) -> Option<T> {
        self.shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }

    pub fn take(&self) -> Option<R> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Detachable<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Never held across an await: the lock is uncontended.
        match self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(inner) => Pin::new(inner).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    async fn compress(data: Vec<u8>, c: Compression) -> Vec<u8> {
        let mut compressed = Vec::new();
        compress_on_thread(io::Cursor::new(data), c, None)
            .unwrap()
            .read_to_end(&mut compressed)
            .await
            .unwrap();
        compressed
    }

    /// Gives some bytes, then panics, as a bug in a reader or the compressor would.
    struct PanicsAfterFirstRead(bool);

    impl Read for PanicsAfterFirstRead {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(!self.0, "reader bug");
            self.0 = true;
            buf[..4].copy_from_slice(b"data");
            Ok(4)
        }
    }

    #[tokio::test]
    async fn a_compressor_that_panics_is_an_error_not_the_end_of_the_stream() {
        for algorithm in [Algorithm::None, Algorithm::Zstd] {
            let c = Compression {
                algorithm,
                level: 3,
                threads: 1,
            };
            let mut out = Vec::new();
            let result = compress_on_thread(PanicsAfterFirstRead(false), c, None)
                .unwrap()
                .read_to_end(&mut out)
                .await;
            let err = result.expect_err("a panicked compressor must not end the stream cleanly");
            assert!(err.to_string().contains("panicked"), "{err}");
        }
        // An explicit end is still a clean end.
        let (tx, rx) = mpsc::channel(2);
        tx.send(Chunk::Data(Bytes::from_static(b"ab")))
            .await
            .unwrap();
        tx.send(Chunk::End).await.unwrap();
        drop(tx);
        let mut out = Vec::new();
        Compressed::from_channel(rx)
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, b"ab");
    }

    async fn round_trip(algorithm: Algorithm, threads: u32) {
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let c = Compression {
            algorithm,
            level: 3,
            threads,
        };
        let compressed = compress(data.clone(), c).await;
        if algorithm != Algorithm::None {
            assert!(compressed.len() < data.len());
        }
        let counter = Arc::new(AtomicU64::new(0));
        let metered = Metered::hashing(&compressed[..], counter.clone());
        let mut decoder = Decoder::new(BufReader::new(metered), algorithm);
        let mut out = Vec::new();
        decoder.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        let (n, digest) = decoder.into_inner().into_inner().finish();
        assert_eq!(n, compressed.len() as u64);
        assert_eq!(digest, hex::encode(Sha256::digest(&compressed)));
        assert_eq!(counter.load(Ordering::Relaxed), n);
    }

    #[tokio::test]
    async fn zstd_round_trip() {
        round_trip(Algorithm::Zstd, 1).await;
        round_trip(Algorithm::Zstd, 2).await;
    }

    #[tokio::test]
    async fn gzip_and_plain_round_trip() {
        round_trip(Algorithm::Gzip, 1).await;
        round_trip(Algorithm::None, 1).await;
    }

    /// Gives this many bytes, then fails.
    struct Failing(usize);

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("pipe broke"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(b'x');
            self.0 -= n;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn a_failing_input_fails_the_compressed_stream() {
        for (algorithm, threads) in [
            (Algorithm::Zstd, 2),
            (Algorithm::Gzip, 1),
            (Algorithm::None, 1),
        ] {
            let c = Compression {
                algorithm,
                level: 1,
                threads,
            };
            let mut out = Vec::new();
            let r = compress_on_thread(Failing(3 << 20), c, None)
                .unwrap()
                .read_to_end(&mut out)
                .await;
            let e = r.expect_err("the input's error must reach the pipeline");
            assert!(e.to_string().contains("pipe broke"), "{algorithm:?}: {e}");
        }
    }

    #[tokio::test]
    async fn truncated_zstd_is_an_error() {
        let data = vec![7u8; 100_000];
        let c = Compression {
            algorithm: Algorithm::Zstd,
            level: 3,
            threads: 1,
        };
        let mut compressed = compress(data, c).await;
        compressed.truncate(compressed.len() - 4);
        let mut out = Vec::new();
        let r = Decoder::new(BufReader::new(&compressed[..]), Algorithm::Zstd)
            .read_to_end(&mut out)
            .await;
        assert!(r.is_err());
    }
}
