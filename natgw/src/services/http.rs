//! What natgw's small HTTP servers share (the UPnP IGD server on the LAN, the
//! Prometheus endpoint): the limits a client is held to — connections in all and per
//! host ([`ConnectionSlot`]), the time to send a request ([`READ_TIMEOUT`]) and to
//! take the answer ([`WRITE_TIMEOUT`]) — and [`read_request`], which reads one
//! request framed by `natgw_proto::upnp::http` and its size limits. One request per
//! connection, answered with `Connection: close`.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use natgw_proto::upnp::http::{self, Request};

/// HTTP connections open at once, in all.
pub const MAX_CONNECTIONS: usize = 64;
/// HTTP connections one host may hold open at once.
pub const MAX_CONNECTIONS_PER_HOST: usize = 8;
/// Time a client has to send its whole request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the whole answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The open connections of one server, by client host.
pub type OpenConnections = Arc<Mutex<HashMap<Ipv4Addr, usize>>>;

/// Counts a connection while it is open.
pub struct ConnectionSlot {
    open: OpenConnections,
    host: Ipv4Addr,
}

impl ConnectionSlot {
    /// A slot for a connection of `host`; `None` when [`MAX_CONNECTIONS`] are open,
    /// or [`MAX_CONNECTIONS_PER_HOST`] of this host's (close it at once).
    #[must_use]
    pub fn take(open: &OpenConnections, host: Ipv4Addr) -> Option<Self> {
        let mut map = open.lock().ok()?;
        let total: usize = map.values().sum();
        let mine = map.get(&host).copied().unwrap_or(0);
        if total >= MAX_CONNECTIONS || mine >= MAX_CONNECTIONS_PER_HOST {
            return None;
        }
        *map.entry(host).or_insert(0) += 1;
        Some(Self {
            open: Arc::clone(open),
            host,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.open.lock() {
            if let Some(n) = map.get_mut(&self.host) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.host);
                }
            }
        }
    }
}

/// Reads one request: until it is complete or malformed by the engine's framing
/// (limits included), or the client stops sending. Returns the bytes and whether the
/// client closed its side. The caller bounds it in time ([`READ_TIMEOUT`]).
///
/// # Errors
/// When reading from the connection fails.
pub async fn read_request(
    stream: &mut TcpStream,
    limits: &http::Limits,
) -> io::Result<(Vec<u8>, bool)> {
    let cap = limits.max_head + limits.max_body + 1;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let room = cap.saturating_sub(buf.len()).min(chunk.len());
        if room == 0 {
            return Ok((buf, false));
        }
        let n = stream.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Ok((buf, true));
        }
        buf.extend_from_slice(&chunk[..n]);
        match Request::parse(&buf, limits) {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => return Ok((buf, false)),
        }
    }
}

/// Writes a whole response and closes the sending side, within [`WRITE_TIMEOUT`]: a
/// client that does not take its answer holds no slot longer than that.
///
/// # Errors
/// When the write or the shutdown fails, or the client is too slow
/// ([`io::ErrorKind::TimedOut`]).
pub async fn write_response(stream: &mut TcpStream, response: &[u8]) -> io::Result<()> {
    let write = async {
        stream.write_all(response).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_the_global_and_per_host_limits() {
        let open = OpenConnections::default();
        let a = Ipv4Addr::new(10, 0, 1, 2);
        let mine: Vec<_> = (0..MAX_CONNECTIONS_PER_HOST)
            .map(|_| ConnectionSlot::take(&open, a).unwrap())
            .collect();
        assert!(ConnectionSlot::take(&open, a).is_none(), "per host");
        drop(mine);
        assert!(open.lock().unwrap().is_empty(), "released on drop");
        let all: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|i| ConnectionSlot::take(&open, Ipv4Addr::from(0x0a00_0100 + i as u32)).unwrap())
            .collect();
        assert!(ConnectionSlot::take(&open, Ipv4Addr::new(10, 9, 9, 9)).is_none());
        drop(all);
    }
}
