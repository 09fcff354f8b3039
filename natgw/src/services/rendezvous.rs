//! `natgw rendezvous`: the [`Rendezvous`] engine on one UDP socket and one TCP listener
//! bound to the same address and port, and beside it natgw's STUN Binding responder
//! ([`Responder`]) on the same sockets, so a peer learns its public endpoint from the
//! server it registers with. Each datagram or frame goes to one or the other by its
//! first byte ([`natgw_proto::punch::demux`]). One task owns both engines; each TCP connection has
//! a reader task that hands it frames and a writer task that sends what they decide.
//! On SIGINT or SIGTERM it prints its counters and exits.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::frames::read_frame;
use crate::clients::punch::RendezvousArgs;
use crate::services::replies::Replies;
use natgw_proto::punch::demux::{self, Frame, Protocol};
use natgw_proto::punch::rendezvous::{Config, Counters, Origin, Rendezvous, Transmit, Transport};
use natgw_proto::stun::responder::{self as stun, CountersSnapshot, Outcome, Responder};

/// Most TCP connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Messages queued for one TCP connection before further ones are dropped.
const CONNECTION_QUEUE: usize = 32;

/// What a connection's reader tells the engine task.
enum Event {
    Frame(SocketAddrV4, Vec<u8>),
    /// A STUN message on the connection.
    Stun(SocketAddrV4, Vec<u8>),
    /// The stream broke framing: these bytes (a header that is not ours) are counted
    /// as malformed and the connection is closed.
    Garbage(SocketAddrV4, Vec<u8>),
    Closed(SocketAddrV4),
}

/// Runs the rendezvous until SIGINT or SIGTERM.
///
/// # Errors
/// When the sockets cannot be bound, or receiving fails for good.
pub async fn serve(args: &RendezvousArgs) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let udp = UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("binding UDP {}", args.listen))?;
    // With port 0, TCP takes the port UDP got.
    let listen = match udp.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => anyhow::bail!("bound to IPv6 {a}"),
    };
    let tcp = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding TCP {listen}"))?;
    let config = Config {
        lifetime: Duration::from_secs(args.lifetime),
        ..Config::default()
    };
    let mut engine = Rendezvous::new(config, natgw_proto::util::rng::random_u64());
    let stun_counters = Arc::<stun::Counters>::default();
    let mut stun = Responder::new(stun::Config::new(listen), Arc::clone(&stun_counters))
        .map_err(|e| anyhow::anyhow!("configuring the STUN responder on {listen}: {e}"))?;
    let started = Instant::now();
    let mut replies = Replies::new("rendezvous", started);
    if args.json {
        println!(
            "{}",
            json!({
                "event": "listening",
                "udp": listen.to_string(),
                "tcp": listen.to_string(),
                "stun": true,
            })
        );
    } else {
        println!("natgw rendezvous: listening on {listen} (UDP and TCP, STUN Binding too)");
    }
    log::info!(
        "rendezvous.listening addr={listen} lifetime={}s",
        args.lifetime
    );

    let (events_tx, mut events) = mpsc::channel::<Event>(1024);
    let mut connections: HashMap<SocketAddrV4, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut buf = vec![0; 2048];
    loop {
        let transmits = tokio::select! {
            received = udp.recv_from(&mut buf) => match received {
                Ok((n, SocketAddr::V4(from))) if demux::classify(&buf[..n]) == Protocol::Stun => {
                    let now = Instant::now();
                    if !replies.admit(now, *from.ip()) {
                        stun_counters.dropped_before_engine(stun::DropReason::Unresolved);
                    } else if let Outcome::Reply { to, bytes, .. } =
                        stun.handle(now, listen, from, &buf[..n])
                    {
                        if !replies.send(now, &udp, &bytes, to) {
                            stun_counters.send_failed();
                        }
                    }
                    Vec::new()
                }
                Ok((n, SocketAddr::V4(from))) => {
                    let origin = Origin { transport: Transport::Udp, addr: from };
                    engine.handle(Instant::now(), origin, &buf[..n])
                }
                Ok(_) => Vec::new(),
                Err(e) if transient(&e) => Vec::new(),
                Err(e) => return Err(e).context("receiving on the rendezvous UDP socket"),
            },
            accepted = tcp.accept() => {
                match accepted {
                    Ok((stream, SocketAddr::V4(remote))) if connections.len() < MAX_CONNECTIONS => {
                        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
                        connections.insert(remote, tx);
                        spawn_connection(stream, remote, rx, events_tx.clone());
                    }
                    Ok((_, remote)) => {
                        log::warn!("rendezvous.refused remote={remote} too_many_connections");
                    }
                    Err(e) => log::debug!("rendezvous.accept_failed error={e}"),
                }
                Vec::new()
            }
            Some(event) = events.recv() => match event {
                Event::Frame(remote, bytes) => {
                    let origin = Origin { transport: Transport::Tcp, addr: remote };
                    engine.handle(Instant::now(), origin, &bytes)
                }
                Event::Stun(remote, bytes) => {
                    // The answer goes back on the connection (RESPONSE-PORT means
                    // nothing over TCP).
                    if let Outcome::Reply { bytes, .. } =
                        stun.handle(Instant::now(), listen, remote, &bytes)
                    {
                        if let Some(tx) = connections.get(&remote) {
                            let _ = tx.try_send(bytes);
                        }
                    }
                    Vec::new()
                }
                Event::Garbage(remote, bytes) => {
                    let origin = Origin { transport: Transport::Tcp, addr: remote };
                    connections.remove(&remote);
                    engine.handle(Instant::now(), origin, &bytes)
                }
                Event::Closed(remote) => {
                    connections.remove(&remote);
                    engine.disconnected(Origin { transport: Transport::Tcp, addr: remote });
                    Vec::new()
                }
            },
            _ = tick.tick() => {
                engine.sweep(Instant::now());
                Vec::new()
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        for t in transmits {
            send(&udp, &connections, &mut replies, t);
        }
    }
    let counters = engine.counters();
    let stun = stun_counters.snapshot();
    if args.json {
        println!(
            "{}",
            json!({
                "event": "stopped",
                "uptime_s": started.elapsed().as_secs_f64(),
                "registrations": engine.len(),
                "counters": counters,
                "stun": stun_json(&stun),
                "replies_unresolved": replies.stats().unresolved,
                "replies_send_failed": replies.stats().send_failed,
            })
        );
    } else {
        println!(
            "natgw rendezvous: stopped after {:.1} s: {}; STUN: {}; replies held back \
             (unresolved) {}, lost {}",
            started.elapsed().as_secs_f64(),
            summary(&counters),
            crate::services::stun::summary(&stun),
            replies.stats().unresolved,
            replies.stats().send_failed
        );
    }
    Ok(())
}

/// The STUN responder's counters as JSON: what it answered, and why it dropped the
/// rest.
fn stun_json(c: &CountersSnapshot) -> serde_json::Value {
    let dropped: serde_json::Map<String, serde_json::Value> = c
        .dropped
        .iter()
        .map(|(reason, n)| (reason.as_str().to_owned(), json!(n)))
        .collect();
    json!({
        "received": c.received,
        "success": c.success,
        "bad_request": c.bad_request,
        "unknown_attribute": c.unknown_attribute,
        "dropped": dropped,
    })
}

/// The counters on one line.
#[must_use]
pub fn summary(c: &Counters) -> String {
    format!(
        "received {}, registered {}, refreshed {}, connects {}, peer answers {}, \
         introductions {}, unknown peer {}, not registered {}, expired {}, table full {}, \
         malformed {}, unsupported version {}, unexpected {}",
        c.received,
        c.registered,
        c.refreshed,
        c.connects,
        c.peer_answers,
        c.introductions,
        c.unknown_peer,
        c.not_registered,
        c.expired,
        c.table_full,
        c.malformed,
        c.unsupported_version,
        c.unexpected
    )
}

/// Sends `t` without waiting: over UDP through the reply path (held back while a
/// possibly spoofed destination is unresolved, dropped when the socket is full).
fn send(
    udp: &UdpSocket,
    connections: &HashMap<SocketAddrV4, mpsc::Sender<Vec<u8>>>,
    replies: &mut Replies,
    t: Transmit,
) {
    match t.to.transport {
        Transport::Udp => {
            let now = Instant::now();
            if replies.admit(now, *t.to.addr.ip()) {
                replies.send(now, udp, &t.bytes, t.to.addr);
            }
        }
        Transport::Tcp => {
            if let Some(tx) = connections.get(&t.to.addr) {
                // A connection that does not read is not waited for.
                let _ = tx.try_send(t.bytes);
            }
        }
    }
}

/// A reader task feeding frames to the engine and a writer task sending its answers.
fn spawn_connection(
    stream: TcpStream,
    remote: SocketAddrV4,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<Event>,
) {
    let (reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(read_connection(reader, remote, events));
}

async fn read_connection(
    mut reader: OwnedReadHalf,
    remote: SocketAddrV4,
    events: mpsc::Sender<Event>,
) {
    loop {
        match read_frame(&mut reader).await {
            Ok(frame) => {
                let event = match frame {
                    Frame::Punch(bytes) => Event::Frame(remote, bytes),
                    Frame::Stun(bytes) => Event::Stun(remote, bytes),
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let _ = events
                    .send(Event::Garbage(remote, b"garbage".to_vec()))
                    .await;
                break;
            }
            Err(_) => break,
        }
    }
    let _ = events.send(Event::Closed(remote)).await;
}

/// Receive errors that only report an ICMP error about an earlier datagram.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
