//! Compression for the pipeline: one encoder/decoder type over the chosen algorithm, plus a
//! reader that hashes and counts the bytes flowing through it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder};
use async_compression::Level;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::config::{Algorithm, Compression};

pub enum Encoder<R> {
    Zstd(ZstdEncoder<R>),
    Gzip(GzipEncoder<R>),
    Plain(R),
}

impl<R: AsyncBufRead + Unpin> Encoder<R> {
    pub fn new(inner: R, c: Compression) -> Self {
        match c.algorithm {
            Algorithm::Zstd => {
                // A frame checksum lets restore detect corruption while decompressing.
                let mut params = vec![async_compression::zstd::CParameter::checksum_flag(true)];
                if c.threads > 1 {
                    params.push(async_compression::zstd::CParameter::nb_workers(c.threads));
                }
                Encoder::Zstd(ZstdEncoder::with_quality_and_params(
                    inner,
                    Level::Precise(c.level),
                    &params,
                ))
            }
            Algorithm::Gzip => {
                Encoder::Gzip(GzipEncoder::with_quality(inner, Level::Precise(c.level)))
            }
            Algorithm::None => Encoder::Plain(inner),
        }
    }
}

impl<R: AsyncBufRead + Unpin> AsyncRead for Encoder<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Encoder::Zstd(r) => Pin::new(r).poll_read(cx, buf),
            Encoder::Gzip(r) => Pin::new(r).poll_read(cx, buf),
            Encoder::Plain(r) => Pin::new(r).poll_read(cx, buf),
        }
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
            let new = &buf.filled()[before..];
            if let Some(h) = this.hasher.as_mut() {
                h.update(new);
            }
            this.total += new.len() as u64;
            this.counter.fetch_add(new.len() as u64, Ordering::Relaxed);
        } else if let Poll::Ready(Err(_)) = &poll {
            this.read_failed = true;
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, BufReader};

    async fn round_trip(algorithm: Algorithm, threads: u32) {
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let c = Compression {
            algorithm,
            level: 3,
            threads,
        };
        let mut compressed = Vec::new();
        Encoder::new(BufReader::new(&data[..]), c)
            .read_to_end(&mut compressed)
            .await
            .unwrap();
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

    #[tokio::test]
    async fn truncated_zstd_is_an_error() {
        let data = vec![7u8; 100_000];
        let c = Compression {
            algorithm: Algorithm::Zstd,
            level: 3,
            threads: 1,
        };
        let mut compressed = Vec::new();
        Encoder::new(BufReader::new(&data[..]), c)
            .read_to_end(&mut compressed)
            .await
            .unwrap();
        compressed.truncate(compressed.len() - 4);
        let mut out = Vec::new();
        let r = Decoder::new(BufReader::new(&compressed[..]), Algorithm::Zstd)
            .read_to_end(&mut out)
            .await;
        assert!(r.is_err());
    }
}
