//! The responder on sockets: a thin tokio loop that hands every datagram to the
//! [`Responder`] engine and sends what it decides from the socket it names, without
//! waiting (see [`crate::services::replies`]: a reply that would wait for the resolution of a
//! possibly spoofed source is held back beyond a small budget, and one the socket
//! cannot take is dropped and counted). One task
//! owns the engine, so there are no locks; the counters are atomics readable from
//! elsewhere. Used by `natgw stun serve`, and meant for the daemon's responder on the
//! gateway's external addresses.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use futures::future::select_all;
use log::{debug, warn};
use tokio::net::UdpSocket;

use crate::services::replies::Replies;
use crate::services::transient;
use natgw_proto::stun::responder::{
    Config, Counters, CountersSnapshot, DropReason, Outcome, Responder,
};

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

/// Binds one UDP socket per address the configuration receives on
/// ([`Config::local_addresses`]: one, or four in RFC 5780 mode).
///
/// # Errors
/// When an address cannot be bound; the message names it.
pub async fn bind(config: &Config) -> anyhow::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::new();
    for addr in config.local_addresses() {
        let socket = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding the STUN socket on UDP {addr}"))?;
        sockets.push(socket);
    }
    Ok(sockets)
}

/// Answers STUN on `sockets` (as returned by [`bind`]) until an I/O error on
/// receiving; cancel by dropping the future. Counts into `counters`.
///
/// # Errors
/// An invalid configuration, a socket that is not bound to an IPv4 address, or a
/// receive error other than a transient one.
pub async fn run(
    config: Config,
    sockets: Vec<UdpSocket>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut responder =
        Responder::new(config, Arc::clone(&counters)).context("configuring the STUN responder")?;
    let mut replies = Replies::new("stun", Instant::now());
    if sockets.is_empty() {
        bail!("no STUN sockets to serve");
    }
    let locals = sockets
        .iter()
        .map(|s| match s.local_addr() {
            Ok(SocketAddr::V4(a)) => Ok(a),
            Ok(other) => bail!("STUN socket {other} is not IPv4"),
            Err(e) => Err(e).context("reading a STUN socket's address"),
        })
        .collect::<anyhow::Result<Vec<SocketAddrV4>>>()?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (ready, index, _) = select_all(sockets.iter().map(|s| Box::pin(s.readable()))).await;
        ready.with_context(|| format!("waiting on STUN socket {}", locals[index]))?;
        // Drain what is queued; `readable` may also wake spuriously (WouldBlock).
        loop {
            let (len, src) = match sockets[index].try_recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if transient(&e) => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("receiving on STUN socket {}", locals[index]))
                }
            };
            let SocketAddr::V4(src) = src else { continue };
            let now = Instant::now();
            // The reply goes to the source's IP (RESPONSE-PORT changes the port only).
            if !replies.admit(now, *src.ip()) {
                counters.dropped_before_engine(DropReason::Unresolved);
                continue;
            }
            match responder.handle(now, locals[index], src, &buf[..len]) {
                Outcome::Reply { from, to, bytes } => {
                    let Some(out) = locals.iter().position(|l| *l == from) else {
                        warn!("stun.no_socket from={from}: the responder chose an address with no socket");
                        continue;
                    };
                    if !replies.send(now, &sockets[out], &bytes, to) {
                        counters.send_failed();
                    }
                }
                Outcome::Drop(reason) => {
                    debug!(
                        "stun.drop reason={reason} src={src} local={}",
                        locals[index]
                    );
                }
            }
        }
    }
}

/// The counters as `key=value` pairs for a log line.
#[must_use]
pub fn summary(c: &CountersSnapshot) -> String {
    let mut out = format!(
        "received={} success={} legacy={} bad_request={} unknown_attribute={} \
         send_failed={}",
        c.received, c.success, c.legacy, c.bad_request, c.unknown_attribute, c.send_failed
    );
    for (reason, n) in &c.dropped {
        if *n > 0 {
            out.push_str(&format!(" dropped_{reason}={n}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_proto::stun::wire::{Attribute, Class, Packet, Repr, MAGIC_COOKIE, METHOD_BINDING};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[tokio::test]
    async fn serves_a_binding_request_on_loopback() {
        let mut config = Config::new(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        // Port 0 is refused by validation; bind an ephemeral port first and use it.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        config.primary.set_port(port);
        let sockets = bind(&config).await.unwrap();
        let counters = Arc::<Counters>::default();
        let server = tokio::spawn(run(config, sockets, Arc::clone(&counters)));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let request = Repr {
            class: Class::Request,
            method: METHOD_BINDING,
            cookie: MAGIC_COOKIE,
            transaction_id: [3; 12],
            attributes: vec![Attribute::Fingerprint],
        }
        .to_bytes();
        client.send_to(&request, ("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(from.port(), port);
        let reply = Repr::parse(&Packet::new_checked(&buf[..n]).unwrap()).unwrap();
        assert_eq!(reply.class, Class::Success);
        assert!(reply
            .attributes
            .contains(&Attribute::XorMappedAddress(client.local_addr().unwrap())));
        assert_eq!(counters.snapshot().success, 1);
        server.abort();
    }
}
