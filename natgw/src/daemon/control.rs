//! The daemon's control socket, `/run/natgw/net-<netns inode>/control.sock` (root
//! only): `natgw monitor` subscribes to the mapping events there and `natgw flush`
//! asks the daemon to delete mappings; `natgw ha-state` (keepalived's notify
//! script) reports the VRRP state that sets the role (`--ha`).
//!
//! One JSON [`Request`] line per connection; the daemon answers with JSON [`Reply`]
//! lines — a stream of events for a monitor, one line for a flush. A monitor's
//! queue is the event hub's ([`events::QUEUE`] events): a client that falls further
//! behind loses the oldest and is told how many (`Reply::Lost`); at most
//! [`MAX_MONITORS`] monitors at once.
//!
//! Also here: the reader of the data path's `MAPPING_EVENTS` ring buffer, which the
//! programs write without waking anyone, drained every [`DRAIN_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::nat_table::events::{self, EventLine, MappingFilter};

/// Name of the socket in the runtime directory.
pub const SOCKET: &str = "control.sock";

/// Most `natgw monitor` clients at once.
pub const MAX_MONITORS: usize = 8;

/// How often the `MAPPING_EVENTS` ring buffer is drained.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long a client may take to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// Longest request line accepted.
const MAX_REQUEST: usize = 4096;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Every mapping event from now on.
    Monitor,
    /// Delete the mappings `filter` selects; static forwards only with
    /// `include_static`.
    Flush {
        /// Which mappings.
        filter: MappingFilter,
        /// Static forwards too.
        include_static: bool,
    },
    /// keepalived's VRRP state changed (`natgw ha-state`).
    HaState {
        /// The new state.
        state: super::keepalived::VrrpState,
    },
    /// Change the role in an active/standby pair (`natgw ha-role`).
    Role {
        /// The new role.
        role: crate::config::ha::HaRoleChoice,
    },
}

/// One line of the daemon's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The monitor is subscribed: every event from here on reaches it.
    Subscribed,
    /// A mapping event.
    Event(EventLine),
    /// This client fell behind: `count` events were dropped for it.
    Lost {
        /// How many.
        count: u64,
    },
    /// The role is changed.
    RoleSet,
    /// A flush is done.
    Flushed {
        /// Mappings deleted.
        deleted: usize,
    },
    /// The role after an `HaState` request.
    Role {
        /// `active` or `standby`.
        role: String,
        /// Whether the request changed it.
        changed: bool,
    },
    /// The request was refused or failed.
    Error {
        /// Why.
        message: String,
    },
}

/// What the daemon's main loop, which owns the maps, is asked to do.
#[derive(Debug)]
pub enum Order {
    /// A flush, and where its answer goes.
    Flush(MappingFilter, bool, oneshot::Sender<Result<usize, String>>),
    /// The number of monitors changed: turn the data path's mapping events on (any)
    /// or off (none); say when done, if asked.
    Monitors(Option<oneshot::Sender<()>>),
    /// keepalived's state, and where the resulting role goes.
    HaState(
        super::keepalived::VrrpState,
        oneshot::Sender<Result<(String, bool), String>>,
    ),
    /// Change the role (replication), and where the answer goes.
    Role(super::role::Role, oneshot::Sender<Result<(), String>>),
}

/// The control socket's counters (controller counters of `natgw status`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Events dropped for monitors that fell behind.
    pub monitor_events_lost: AtomicU64,
    /// Monitors refused (too many).
    pub monitors_refused: AtomicU64,
}

/// The socket path in runtime directory `state_dir`.
#[must_use]
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Binds the control socket (replacing a stale one: the caller holds the instance
/// lock) and serves it; flushes go to `orders`.
pub fn spawn(
    state_dir: &Path,
    orders: mpsc::Sender<Order>,
    counters: Arc<Counters>,
) -> Result<JoinHandle<()>> {
    events::install();
    let path = socket_path(state_dir);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {} to root", path.display()))?;
    }
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_client(stream, orders.clone(), Arc::clone(&counters)));
                }
                Err(e) => {
                    log::warn!("control.accept_failed error=\"{e}\"");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn serve_client(stream: UnixStream, orders: mpsc::Sender<Order>, counters: Arc<Counters>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST as u64));
    let request = match tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut line)).await {
        Ok(Ok(0)) => return,
        Ok(Ok(_)) => serde_json::from_str::<Request>(line.trim()).map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no request within {} s", REQUEST_WAIT.as_secs())),
    };
    let result = match request {
        Err(e) => {
            send(
                &mut write,
                &Reply::Error {
                    message: format!("not a request: {e}"),
                },
            )
            .await
        }
        Ok(Request::Flush {
            filter,
            include_static,
        }) => {
            let (tx, rx) = oneshot::channel();
            let reply = if orders
                .send(Order::Flush(filter, include_static, tx))
                .await
                .is_err()
            {
                Reply::Error {
                    message: "natgw is stopping".to_owned(),
                }
            } else {
                match rx.await {
                    Ok(Ok(deleted)) => Reply::Flushed { deleted },
                    Ok(Err(message)) => Reply::Error { message },
                    Err(_) => Reply::Error {
                        message: "natgw is stopping".to_owned(),
                    },
                }
            };
            send(&mut write, &reply).await
        }
        Ok(Request::Monitor) => monitor(&mut reader, &mut write, &orders, &counters).await,
        Ok(Request::HaState { state }) => {
            let (tx, rx) = oneshot::channel();
            let reply = if orders.send(Order::HaState(state, tx)).await.is_err() {
                Reply::Error {
                    message: "natgw is stopping".to_owned(),
                }
            } else {
                match rx.await {
                    Ok(Ok((role, changed))) => Reply::Role { role, changed },
                    Ok(Err(message)) => Reply::Error { message },
                    Err(_) => Reply::Error {
                        message: "natgw is stopping".to_owned(),
                    },
                }
            };
            send(&mut write, &reply).await
        }
        Ok(Request::Role { role }) => {
            let role = match role {
                crate::config::ha::HaRoleChoice::Active => super::role::Role::Active,
                crate::config::ha::HaRoleChoice::Standby => super::role::Role::Standby,
            };
            let (tx, rx) = oneshot::channel();
            let reply = if orders.send(Order::Role(role, tx)).await.is_err() {
                Reply::Error {
                    message: "natgw is stopping".to_owned(),
                }
            } else {
                match rx.await {
                    Ok(Ok(())) => Reply::RoleSet,
                    Ok(Err(message)) => Reply::Error { message },
                    Err(_) => Reply::Error {
                        message: "natgw is stopping".to_owned(),
                    },
                }
            };
            send(&mut write, &reply).await
        }
    };
    if let Err(e) = result {
        log::debug!("control.client_gone error=\"{e}\"");
    }
}

/// Streams events to one monitor until it goes away (closes its end).
async fn monitor<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    orders: &mpsc::Sender<Order>,
    counters: &Counters,
) -> std::io::Result<()> {
    let receiver = (events::monitors() < MAX_MONITORS)
        .then(events::subscribe)
        .flatten();
    let Some(mut receiver) = receiver else {
        counters.monitors_refused.fetch_add(1, Ordering::Relaxed);
        return send(
            write,
            &Reply::Error {
                message: format!("too many monitors (at most {MAX_MONITORS})"),
            },
        )
        .await;
    };
    // The data path writes mapping events only while someone watches: on before
    // the client hears it is subscribed, so it misses nothing after that.
    let (done, turned_on) = oneshot::channel();
    if orders.send(Order::Monitors(Some(done))).await.is_ok() {
        let _ = turned_on.await;
    }
    let result = stream(read, write, &mut receiver, counters).await;
    drop(receiver);
    let _ = orders.send(Order::Monitors(None)).await;
    result
}

/// The events of one subscription, until the client goes away.
async fn stream<R: tokio::io::AsyncBufRead + Unpin>(
    read: &mut R,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    receiver: &mut broadcast::Receiver<natgw_common::maps::MappingEvent>,
    counters: &Counters,
) -> std::io::Result<()> {
    send(write, &Reply::Subscribed).await?;
    let mut rest = String::new();
    loop {
        let received = tokio::select! {
            r = receiver.recv() => r,
            // Nothing more is expected from the client: any read ending is it leaving.
            _ = read.read_line(&mut rest) => return Ok(()),
        };
        let reply = match received {
            Ok(e) => Reply::Event(EventLine::of(&e)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                counters.monitor_events_lost.fetch_add(n, Ordering::Relaxed);
                Reply::Lost { count: n }
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        };
        send(write, &reply).await?;
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_string(reply).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

/// Drains the data path's `MAPPING_EVENTS` into the event hub every
/// [`DRAIN_INTERVAL`] (the programs submit without a wakeup).
pub fn spawn_ring_reader(mut ring: RingBuf<MapData>) -> JoinHandle<()> {
    events::install();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut drained = 0usize;
            loop {
                let Some(item) = ring.next() else { break };
                match events::decode(&item) {
                    Some(e) => events::emit(e),
                    None => log::debug!("mapping_events.short len={}", item.len()),
                }
                drop(item);
                drained += 1;
                // A full ring holds 8192 records, the hub 1024: let the subscribers
                // (the allocation log) take theirs before more come.
                if drained % (events::QUEUE / 2) == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }
    })
}

/// The client's end of a control connection: the answer's lines, and the write
/// half, which must stay open as long as the answer is wanted (a monitor whose
/// client closed its end is unsubscribed).
pub struct Connection {
    /// The answer, one JSON [`Reply`] per line.
    pub lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    /// Kept open.
    pub writer: tokio::net::unix::OwnedWriteHalf,
}

/// Connects to the daemon's control socket in runtime directory `state_dir` and
/// sends `request`.
pub async fn connect(state_dir: &Path, request: &Request) -> Result<Connection> {
    let path = socket_path(state_dir);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "connecting to natgw's control socket {} (is `natgw run` running in this \
             network namespace, and are you root?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    Ok(Connection {
        lines: BufReader::new(read).lines(),
        writer: write,
    })
}

/// One exchange on the control socket: sends `request` and reads the daemon's one
/// reply (`natgw flush`, `natgw ha-role`, `natgw ha-state`).
///
/// # Errors
/// No daemon, the connection failing, or a line that is not a [`Reply`].
pub async fn ask(state_dir: &Path, request: &Request) -> Result<Reply> {
    let mut conn = connect(state_dir, request).await?;
    let line = conn
        .lines
        .next_line()
        .await?
        .context("natgw closed the connection without an answer")?;
    serde_json::from_str(&line).with_context(|| format!("natgw sent something unexpected: {line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_line_each() {
        let r = Request::Flush {
            filter: MappingFilter {
                proto: Some(17),
                ..MappingFilter::default()
            },
            include_static: false,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(
            serde_json::to_string(&Request::Monitor).unwrap(),
            "\"monitor\""
        );
        assert_eq!(
            serde_json::to_string(&Reply::Flushed { deleted: 3 }).unwrap(),
            r#"{"flushed":{"deleted":3}}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::HaState {
                state: super::super::keepalived::VrrpState::Master
            })
            .unwrap(),
            r#"{"ha_state":{"state":"MASTER"}}"#
        );
    }
}
