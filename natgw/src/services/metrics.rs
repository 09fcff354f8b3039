//! The Prometheus endpoint on a socket: `GET /metrics` answered with what a
//! [`Render`] writes ([`super::exposition`]), any other path 404, any other method
//! 405. Its connections are held to the limits of the UPnP server
//! ([`super::http`]: connections in all and per host, time to send the request and
//! to take the answer, the request's size), one request per connection.
//!
//! The answer is rendered on the blocking pool, never in the daemon's loop: what it
//! needs from the loop, the loop publishes (see `daemon::metrics`).

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use log::{debug, info};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use natgw_proto::upnp::http::{self, Request, Response, Status};

use super::exposition::CONTENT_TYPE;
use super::http::{read_request, write_response, ConnectionSlot, OpenConnections, READ_TIMEOUT};

/// Writes the exposition of the moment. Called on the blocking pool.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The path served.
pub const PATH: &str = "/metrics";

/// A scrape carries no body: a request head of 8 KiB at most, no body.
const LIMITS: http::Limits = http::Limits {
    max_head: 8192,
    max_headers: 32,
    max_body: 0,
};

/// What the `SERVER` header says.
const SERVER: &str = concat!("natgw/", env!("CARGO_PKG_VERSION"));

/// The running endpoint.
pub struct MetricsServer {
    local: SocketAddrV4,
    task: Option<JoinHandle<()>>,
}

/// How a request is answered, before the body is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`: render.
    Metrics,
    /// Anything else: this status.
    Refuse(Status),
}

/// Where `bytes` (all a client sent; `closed` when it closed its side) goes.
#[must_use]
pub fn route(bytes: &[u8], closed: bool) -> (Route, Option<http::HttpError>) {
    let request = match Request::parse(bytes, &LIMITS) {
        Ok(Some(r)) => r,
        Ok(None) => {
            let e = if closed {
                http::HttpError::Truncated
            } else {
                // Cut off by the size limit before the head ended.
                http::HttpError::HeadTooLarge(LIMITS.max_head)
            };
            return (Route::Refuse(e.status()), Some(e));
        }
        Err(e) => return (Route::Refuse(e.status()), Some(e)),
    };
    let path = request
        .path
        .split_once('?')
        .map_or(request.path.as_str(), |(p, _)| p);
    if path != PATH {
        (Route::Refuse(Status::NOT_FOUND), None)
    } else if request.method != "GET" {
        (Route::Refuse(Status::METHOD_NOT_ALLOWED), None)
    } else {
        (Route::Metrics, None)
    }
}

/// The whole answer to `route`, with `body` rendered for [`Route::Metrics`].
#[must_use]
pub fn answer(route: Route, error: Option<&http::HttpError>, body: Option<String>) -> Vec<u8> {
    let response = match (route, body) {
        (Route::Metrics, Some(body)) => Response {
            status: Status::OK,
            headers: vec![("Content-Type", CONTENT_TYPE.to_owned())],
            body: body.into_bytes(),
        },
        (Route::Metrics, None) => Response::plain(
            Status::INTERNAL_SERVER_ERROR,
            "the metrics could not be gathered",
        ),
        (Route::Refuse(status), _) => {
            let response = match error {
                Some(e) => Response::error(e),
                None if status == Status::NOT_FOUND => {
                    Response::plain(status, "not found: the metrics are at /metrics")
                }
                None => Response::plain(status, "only GET is served"),
            };
            if status == Status::METHOD_NOT_ALLOWED {
                response.with_header("Allow", "GET")
            } else {
                response
            }
        }
    };
    response.to_bytes(SERVER)
}

fn listener(listen: SocketAddrV4, device: Option<&str>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let Some(device) = device {
        socket.bind_device(Some(device.as_bytes()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(128)?;
    TcpListener::from_std(socket.into())
}

async fn serve(mut stream: TcpStream, peer: SocketAddrV4, render: Render) {
    let (bytes, closed) =
        match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream, &LIMITS)).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => {
                debug!("metrics.read_failed client={peer} error=\"{e}\"");
                return;
            }
            Err(_) => {
                debug!("metrics.read_timeout client={peer}");
                return;
            }
        };
    if bytes.is_empty() {
        return;
    }
    let (route, error) = route(&bytes, closed);
    let body = if route == Route::Metrics {
        tokio::task::spawn_blocking(move || render()).await.ok()
    } else {
        None
    };
    let response = answer(route, error.as_ref(), body);
    if let Err(e) = write_response(&mut stream, &response).await {
        debug!("metrics.write_failed client={peer} error=\"{e}\"");
    }
}

async fn run(listener: TcpListener, local: SocketAddrV4, render: Render) {
    let open = OpenConnections::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                debug!("metrics.accept_failed local={local} error=\"{e}\"");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let SocketAddr::V4(peer) = peer else { continue };
        let Some(slot) = ConnectionSlot::take(&open, *peer.ip()) else {
            debug!("metrics.refused client={peer}: too many connections");
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            serve(stream, peer, render).await;
            drop(slot);
        });
    }
}

impl MetricsServer {
    /// Listens on `listen` (bound to interface `device` when given) and answers
    /// scrapes with `render` until stopped.
    ///
    /// # Errors
    /// When the address cannot be bound (not the gateway's, or its port taken).
    pub fn start(listen: SocketAddrV4, device: Option<&str>, render: Render) -> Result<Self> {
        let socket = listener(listen, device).with_context(|| {
            format!(
                "binding the metrics endpoint to TCP {listen}{} (another service holds the \
                 port, or the address is not the gateway's?)",
                device.map_or_else(String::new, |d| format!(" on {d}"))
            )
        })?;
        let local = match socket.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => listen,
        };
        info!("metrics.listening address=http://{local}{PATH}");
        Ok(Self {
            local,
            task: Some(tokio::spawn(run(socket, local, render))),
        })
    }

    /// The address served on.
    #[must_use]
    pub const fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// Stops answering.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    fn status(bytes: &[u8]) -> u16 {
        let text = String::from_utf8_lossy(bytes);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn get_metrics_is_served_other_paths_404_other_methods_405() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(route(get, false), (Route::Metrics, None));
        let with_query = b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n";
        assert_eq!(route(with_query, false).0, Route::Metrics);
        let ok = answer(Route::Metrics, None, Some("natgw_up 1\n".to_owned()));
        let text = String::from_utf8(ok).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{text}"
        );
        assert!(text.contains("CONTENT-LENGTH: 11\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nnatgw_up 1\n"), "{text}");

        for (request, code) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], 404),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", 404),
            (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
            (b"HEAD /metrics HTTP/1.1\r\n\r\n", 405),
            (
                b"GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                413,
            ),
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /metr", 400),
        ] {
            let (r, e) = route(request, true);
            assert!(
                matches!(r, Route::Refuse(s) if s.code == code),
                "{request:?}: {r:?}"
            );
            let bytes = answer(r, e.as_ref(), None);
            assert_eq!(status(&bytes), code, "{request:?}");
            if code == 405 {
                assert!(String::from_utf8_lossy(&bytes).contains("Allow: GET\r\n"));
            }
        }
        // A head that does not end within the limit.
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.resize(LIMITS.max_head + 1, b'a');
        assert_eq!(
            route(&long, false).0,
            Route::Refuse(Status::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        assert_eq!(
            status(&answer(Route::Metrics, None, None)),
            500,
            "a render that failed"
        );
    }

    #[tokio::test]
    async fn scrapes_are_answered_over_a_socket() {
        use tokio::io::AsyncReadExt as _;
        let render: Render = Arc::new(|| "natgw_up 1\n".to_owned());
        let mut server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), None, render).unwrap();
        let to = server.local();
        assert_ne!(to.port(), 0);
        let mut conn = TcpStream::connect(to).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("natgw_up 1\n"), "{answer}");
        server.stop();
    }
}
