//! A small blocking client for the Redis protocol (RESP2): enough for INFO, SCAN, DUMP and
//! pipelined RESTORE, with replies read in order and payloads kept as bytes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: Option<Arc<ClientConfig>>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum ClientError {
    /// The server could not be reached.
    Unavailable(String),
    /// The server refused the credentials or the TLS handshake.
    Refused(String),
    /// The connection broke or the server answered something that is not RESP.
    Io(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unavailable(m) | ClientError::Refused(m) | ClientError::Io(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn into_bulk(self) -> Option<Vec<u8>> {
        match self {
            Reply::Bulk(b) => b,
            Reply::Status(s) => Some(s.into_bytes()),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// A bulk reply as (lossy) text, e.g. INFO's.
    pub fn text(self) -> Result<String, String> {
        match self {
            Reply::Error(e) => Err(e),
            other => Ok(other
                .into_bulk()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()),
        }
    }
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

const READ_BUFFER: usize = 1 << 20;
/// Commands at least this large are written to the socket directly instead of buffered.
const DIRECT_WRITE: usize = 1 << 20;

pub struct Conn {
    io: BufReader<Transport>,
    out: Vec<u8>,
    queued: usize,
}

fn io_error(e: io::Error) -> ClientError {
    ClientError::Io(format!("the connection to the server failed: {e}"))
}

impl Conn {
    /// Connects, sets up TLS, and authenticates (`AUTH [user] password`).
    pub fn connect(target: &Target) -> Result<Conn, ClientError> {
        let place = format!("{}:{}", target.host, target.port);
        let unavailable = |e: &dyn std::fmt::Display| {
            ClientError::Unavailable(format!("cannot connect to {place}: {e}"))
        };
        let addrs: Vec<_> = (target.host.as_str(), target.port)
            .to_socket_addrs()
            .map_err(|e| unavailable(&e))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, target.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(unavailable(&e)),
            (None, None) => return Err(unavailable(&"the host name resolves to no address")),
        };
        tcp.set_nodelay(true).map_err(io_error)?;
        // Bounded waits while connecting; long replies (a big DUMP) get no limit afterwards.
        tcp.set_read_timeout(Some(target.timeout))
            .map_err(io_error)?;
        let transport = match &target.tls {
            None => Transport::Plain(tcp),
            Some(config) => {
                let name = ServerName::try_from(target.host.clone()).map_err(|e| {
                    ClientError::Refused(format!(
                        "{} is not a valid TLS server name: {e}",
                        target.host
                    ))
                })?;
                let conn = ClientConnection::new(config.clone(), name)
                    .map_err(|e| ClientError::Refused(format!("TLS setup failed: {e}")))?;
                let mut stream = StreamOwned::new(conn, tcp);
                while stream.conn.is_handshaking() {
                    stream.conn.complete_io(&mut stream.sock).map_err(|e| {
                        ClientError::Refused(format!("TLS handshake with {place} failed: {e}"))
                    })?;
                }
                Transport::Tls(Box::new(stream))
            }
        };
        let mut conn = Conn {
            io: BufReader::with_capacity(READ_BUFFER, transport),
            out: Vec::new(),
            queued: 0,
        };
        if let Some(password) = &target.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &target.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            if let Reply::Error(e) = conn.call(&args)? {
                return Err(ClientError::Refused(format!(
                    "the server at {place} refused the credentials: {e}"
                )));
            }
        }
        match conn.call(&[b"PING"])? {
            Reply::Error(e) => Err(ClientError::Refused(format!(
                "the server at {place} refused the connection: {e}{}",
                if target.password.is_none() {
                    " (set DB_PASSWORD)"
                } else {
                    ""
                }
            ))),
            _ => {
                conn.set_timeout(None)?;
                Ok(conn)
            }
        }
    }

    fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let tcp = match self.io.get_ref() {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        };
        tcp.set_read_timeout(timeout).map_err(io_error)
    }

    /// Adds a command to the pipeline; nothing is sent until [`Conn::replies`], except a
    /// command with a large argument, which is written at once rather than copied.
    pub fn queue(&mut self, args: &[&[u8]]) -> Result<(), ClientError> {
        self.queued += 1;
        if args.iter().map(|a| a.len()).sum::<usize>() < DIRECT_WRITE {
            encode(&mut self.out, args);
            return Ok(());
        }
        let transport = self.io.get_mut();
        transport.write_all(&self.out).map_err(io_error)?;
        self.out.clear();
        transport
            .write_all(format!("*{}\r\n", args.len()).as_bytes())
            .map_err(io_error)?;
        for a in args {
            transport
                .write_all(format!("${}\r\n", a.len()).as_bytes())
                .map_err(io_error)?;
            transport.write_all(a).map_err(io_error)?;
            transport.write_all(b"\r\n").map_err(io_error)?;
        }
        Ok(())
    }

    /// Bytes queued and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.out.len()
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends the queued commands and reads one reply for each, in order.
    pub fn replies(&mut self) -> Result<Vec<Reply>, ClientError> {
        let n = self.send()?;
        (0..n).map(|_| self.next_reply()).collect()
    }

    /// Sends the queued commands without reading their replies; returns how many replies the
    /// caller must now read with [`Conn::next_reply`], one at a time, so that only one of them
    /// is held in memory.
    pub fn send(&mut self) -> Result<usize, ClientError> {
        let transport = self.io.get_mut();
        transport.write_all(&self.out).map_err(io_error)?;
        transport.flush().map_err(io_error)?;
        self.out.clear();
        Ok(std::mem::take(&mut self.queued))
    }

    /// The next reply of commands already sent.
    pub fn next_reply(&mut self) -> Result<Reply, ClientError> {
        read_reply(&mut self.io)
    }

    /// One command, one reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<Reply, ClientError> {
        self.queue(args)?;
        Ok(self.replies()?.pop().expect("one reply per command"))
    }

    /// A command whose error reply is a failure, e.g. INFO.
    pub fn text(&mut self, args: &[&[u8]]) -> Result<String, ClientError> {
        let command = String::from_utf8_lossy(args[0]).to_uppercase();
        self.call(args)?
            .text()
            .map_err(|e| ClientError::Refused(format!("{command} failed: {e}")))
    }
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn protocol(what: &str) -> ClientError {
    ClientError::Io(format!("the server's reply is not valid RESP: {what}"))
}

fn read_line<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ClientError> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line).map_err(io_error)?;
    if n == 0 {
        return Err(ClientError::Io("the server closed the connection".into()));
    }
    if !line.ends_with(b"\r\n") {
        return Err(protocol("a line does not end with CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(bytes: &[u8]) -> Result<i64, ClientError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol("a length is not a number"))
}

pub fn read_reply<R: BufRead>(r: &mut R) -> Result<Reply, ClientError> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_first().ok_or_else(|| protocol("empty line"))?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    Ok(match kind {
        b'+' => Reply::Status(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_int(rest)?),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut data = vec![0; len as usize + 2];
            r.read_exact(&mut data).map_err(io_error)?;
            if !data.ends_with(b"\r\n") {
                return Err(protocol("a bulk string does not end with CRLF"));
            }
            data.truncate(len as usize);
            Reply::Bulk(Some(data))
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..len)
                .map(|_| read_reply(r))
                .collect::<Result<Vec<_>, _>>()?;
            Reply::Array(Some(items))
        }
        _ => return Err(protocol("unknown reply type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_binary_safe_commands() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k\r\n", b"\x00\xff"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n\x00\xff\r\n");
    }

    #[test]
    fn reads_every_reply_type() {
        let wire = b"+OK\r\n-ERR no\r\n:42\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n*0\r\n*-1\r\n";
        let mut r = &wire[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut r).unwrap().error(), Some("ERR no"));
        assert_eq!(read_reply(&mut r).unwrap().as_int(), Some(42));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Bulk(None));
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"x".to_vec())),
                Reply::Array(Some(vec![]))
            ]))
        );
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Array(None));
        assert!(read_reply(&mut r).is_err());
        assert!(read_reply(&mut &b"$5\r\nab\r\n"[..]).is_err());
        assert!(read_reply(&mut &b"?x\r\n"[..]).is_err());
    }
}
