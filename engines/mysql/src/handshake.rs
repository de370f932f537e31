//! The server's version from the protocol's initial handshake, read before authenticating: a
//! wrong flavor or a too-new server is then reported as such even when the tools could not log
//! in (a MySQL client and a MariaDB server disagree on authentication plugins, for one).

use std::time::Duration;

use runner_core::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// MariaDB prefixes its version with this for old clients.
const MARIADB_PREFIX: &str = "5.5.5-";

pub async fn server_version(host: &str, port: u16, timeout: Duration) -> Result<String, Error> {
    let read = async {
        let mut stream = TcpStream::connect((host, port)).await?;
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).await?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        let mut payload = vec![0u8; len.min(4096)];
        stream.read_exact(&mut payload).await?;
        Ok::<_, std::io::Error>(payload)
    };
    let payload = match tokio::time::timeout(timeout, read).await {
        Err(_) => {
            return Err(Error::DbUnavailable(format!(
                "{host}:{port} did not answer within {}s",
                timeout.as_secs()
            )))
        }
        Ok(Err(e)) => {
            return Err(Error::DbUnavailable(format!(
                "cannot connect to {host}:{port}: {e}"
            )))
        }
        Ok(Ok(p)) => p,
    };
    parse(&payload).map_err(|m| Error::DbRefused(format!("{host}:{port}: {m}")))
}

/// The version in a handshake packet, or the server's error message.
fn parse(payload: &[u8]) -> Result<String, String> {
    match payload.first() {
        Some(0x0a) => {
            let rest = &payload[1..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let version = String::from_utf8_lossy(&rest[..end]).into_owned();
            Ok(version
                .strip_prefix(MARIADB_PREFIX)
                .map(str::to_string)
                .unwrap_or(version))
        }
        // An error packet: 0xff, a 2-byte code, then the message.
        Some(0xff) if payload.len() > 3 => Err(String::from_utf8_lossy(&payload[3..]).into_owned()),
        _ => Err("this is not a MySQL or MariaDB server (unexpected handshake)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions_and_errors() {
        let mut mysql = vec![0x0a];
        mysql.extend_from_slice(b"9.7.0\0\x08\0\0\0rest");
        assert_eq!(parse(&mysql).unwrap(), "9.7.0");
        let mut maria = vec![0x0a];
        maria.extend_from_slice(b"5.5.5-11.8.3-MariaDB-1 from Debian\0...");
        assert_eq!(parse(&maria).unwrap(), "11.8.3-MariaDB-1 from Debian");
        let mut err = vec![0xff, 0x69, 0x04];
        err.extend_from_slice(b"Host '10.0.0.9' is blocked");
        assert_eq!(parse(&err).unwrap_err(), "Host '10.0.0.9' is blocked");
        assert!(parse(b"SSH-2.0-OpenSSH").is_err());
    }
}
