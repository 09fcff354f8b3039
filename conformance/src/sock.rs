//! Sockets inside the testbed's namespaces, as the checks use them: UDP with the
//! kernel's error queue (`IP_RECVERR`), raw sockets that see every ICMP or TCP packet
//! a host receives and send crafted IPv4 packets, the kernel's ICMP "ping" sockets,
//! and TCP sockets bound to a chosen port (hole punching, simultaneous open).
//!
//! A socket created on a thread inside a namespace belongs to that namespace wherever
//! it is used afterwards, so the checks drive every host from one thread.

use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use testbed::Netns;

use super::packet::{Icmp, Ipv4};

/// How long a check waits for something that should arrive.
pub const ARRIVE: Duration = Duration::from_secs(3);
/// How long a check waits to be confident that something does not arrive.
pub const SILENCE: Duration = Duration::from_millis(800);

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A UDP socket bound in `ns`, with `IP_RECVERR` on so ICMP errors about what it sent
/// reach its error queue.
///
/// # Errors
/// When binding or setting the option fails.
pub fn udp(ns: &Netns, addr: Ipv4Addr, port: u16) -> io::Result<UdpSocket> {
    let sock = ns
        .bind_udp(SocketAddr::from((addr, port)))
        .map_err(|e| io::Error::other(e.chain()))?;
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvErr, &true)?;
    Ok(sock)
}

/// Lets `sock` queue `bytes` of datagrams (`SO_RCVBUFFORCE`, past `rmem_max`), for
/// sockets that count a burst before reading it.
///
/// # Errors
/// When the option cannot be set.
pub fn set_big_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) -> io::Result<()> {
    // SAFETY: valid socket and option buffer of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `payload` to `to`.
///
/// # Errors
/// When the kernel refuses the datagram (e.g. `EMSGSIZE` once a path MTU is known).
pub fn send(sock: &UdpSocket, payload: &[u8], to: SocketAddrV4) -> io::Result<()> {
    // An ICMP error about an earlier datagram is reported by the next call (and the
    // datagram is not sent): that error belongs to the past, so send again.
    let mut attempts = 0;
    loop {
        match sock.send_to(payload, to) {
            Err(e) if attempts < 3 && e.raw_os_error().is_some_and(is_async_icmp_error) => {
                attempts += 1;
            }
            other => return other.map(drop),
        }
    }
}

/// Errors the kernel reports on a later call after an ICMP message came in.
fn is_async_icmp_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::EPROTO
            | libc::EACCES
            | libc::ENOPROTOOPT
    )
}

/// Receives one datagram within `within`; `None` when nothing came. Pending errors
/// (`ECONNREFUSED` after an ICMP error) are skipped.
///
/// # Panics
/// On an unexpected socket error.
#[must_use]
pub fn recv_within(sock: &UdpSocket, within: Duration) -> Option<(Vec<u8>, SocketAddrV4)> {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("setting a read timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) => return Some((buf[..n].to_vec(), from)),
            Ok((_, SocketAddr::V6(_))) => {}
            Err(e) if is_timeout(&e) => return None,
            Err(e) if e.raw_os_error().is_some_and(|c| c != libc::EBADF) => {}
            Err(e) => panic!("recv_from: {e}"),
        }
    }
}

/// Receives until a datagram whose payload is `payload` arrives; returns its source.
#[must_use]
pub fn recv_payload(sock: &UdpSocket, payload: &[u8], within: Duration) -> Option<SocketAddrV4> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (data, from) = recv_within(sock, left)?;
        if data == payload {
            return Some(from);
        }
    }
}

/// An ICMP error the kernel queued on a socket (`IP_RECVERR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedError {
    /// `SO_EE_ORIGIN_*`: 2 for an ICMP message, 1 for a local error.
    pub origin: u8,
    /// ICMP type.
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
    /// Extra information: the next-hop MTU for "fragmentation needed".
    pub info: u32,
    /// Who sent the ICMP message.
    pub offender: Option<Ipv4Addr>,
}

/// Origin of an error that came in an ICMP message.
pub const EE_ORIGIN_ICMP: u8 = 2;

/// The next error on `sock`'s error queue within `within`.
#[must_use]
pub fn recv_error(sock: &UdpSocket, within: Duration) -> Option<QueuedError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    let deadline = Instant::now() + within;
    loop {
        let mut buf = [0u8; 2048];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in);
        if let Ok(msg) = recvmsg::<SockaddrIn>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::Ipv4RecvErr(err, addr) = c {
                        return Some(QueuedError {
                            origin: err.ee_origin,
                            kind: err.ee_type,
                            code: err.ee_code,
                            info: err.ee_info,
                            offender: addr.map(|a| Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                        });
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets `IP_MTU_DISCOVER` (`libc::IP_PMTUDISC_DO` sends with DF and never fragments,
/// `IP_PMTUDISC_DONT` sends without DF).
///
/// # Errors
/// When the option cannot be set.
pub fn set_pmtu_discover(sock: &UdpSocket, mode: libc::c_int) -> io::Result<()> {
    // SAFETY: valid socket and option buffer of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&raw const mode).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("option size fits socklen_t")
}

/// A packet a raw socket received, with when it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// Arrival time.
    pub at: Instant,
    /// The whole IPv4 packet.
    pub bytes: Vec<u8>,
}

impl Received {
    /// The packet as IPv4.
    ///
    /// # Panics
    /// Never for what a raw IPv4 socket hands over.
    #[must_use]
    pub fn ip(&self) -> Ipv4<'_> {
        Ipv4::parse(&self.bytes).expect("raw sockets deliver whole IPv4 packets")
    }

    /// The ICMP message, if it is one.
    #[must_use]
    pub fn icmp(&self) -> Option<Icmp<'_>> {
        self.ip().icmp()
    }
}

/// A raw IPv4 socket in a namespace: receives a copy of every packet of its protocol
/// the host receives (with the IP header), or sends whole crafted packets.
pub struct Raw {
    sock: Socket,
}

impl Raw {
    fn open(ns: &Netns, proto: libc::c_int) -> io::Result<Self> {
        let sock = ns
            .try_run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(proto))))
            .map_err(|e| io::Error::other(e.chain()))??;
        sock.set_recv_buffer_size(4 << 20)?;
        Ok(Self { sock })
    }

    /// Sees every ICMP message arriving at the host.
    ///
    /// # Errors
    /// When the socket cannot be opened.
    pub fn icmp(ns: &Netns) -> io::Result<Self> {
        Self::open(ns, libc::IPPROTO_ICMP)
    }

    /// Sees every UDP datagram arriving at the host, whether a socket wants it or not.
    ///
    /// # Errors
    /// When the socket cannot be opened.
    pub fn udp(ns: &Netns) -> io::Result<Self> {
        Self::open(ns, libc::IPPROTO_UDP)
    }

    /// Sees every TCP segment arriving at the host.
    ///
    /// # Errors
    /// When the socket cannot be opened.
    pub fn tcp(ns: &Netns) -> io::Result<Self> {
        Self::open(ns, libc::IPPROTO_TCP)
    }

    /// Sends crafted IPv4 packets, header included (`IPPROTO_RAW`); the kernel fills
    /// in the header checksum and the total length only.
    ///
    /// # Errors
    /// When the socket cannot be opened.
    pub fn sender(ns: &Netns) -> io::Result<Self> {
        Self::open(ns, libc::IPPROTO_RAW)
    }

    /// Sends a whole IPv4 packet towards its destination address.
    ///
    /// # Errors
    /// When the kernel refuses it.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst = Ipv4::parse(packet)
            .ok_or_else(|| io::Error::other("not an IPv4 packet"))?
            .dst();
        self.sock
            .send_to(packet, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(drop)
    }

    /// Sends an ICMP message (not a whole packet) from an `IPPROTO_ICMP` socket to
    /// `dst`; the kernel builds the IP header.
    ///
    /// # Errors
    /// When the kernel refuses it.
    pub fn send_icmp(&self, message: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        self.sock
            .send_to(message, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(drop)
    }

    /// The next packet within `within`.
    ///
    /// # Panics
    /// On an unexpected socket error.
    #[must_use]
    pub fn recv(&self, within: Duration) -> Option<Received> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65536];
        let left = deadline.checked_duration_since(Instant::now())?;
        self.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("setting a read timeout");
        match (&self.sock).read(&mut buf) {
            Ok(n) => Some(Received {
                at: Instant::now(),
                bytes: buf[..n].to_vec(),
            }),
            Err(e) if is_timeout(&e) => None,
            Err(e) => panic!("raw recv: {e}"),
        }
    }

    /// The first packet within `within` for which `wanted` holds.
    #[must_use]
    pub fn recv_matching(
        &self,
        within: Duration,
        mut wanted: impl FnMut(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let got = self.recv(left)?;
            if wanted(&got) {
                return Some(got);
            }
        }
    }

    /// Every packet for which `wanted` holds, until `within` has passed.
    #[must_use]
    pub fn collect(
        &self,
        within: Duration,
        mut wanted: impl FnMut(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(got) = self.recv(left) {
                if wanted(&got) {
                    out.push(got);
                }
            }
        }
        out
    }

    /// Drops whatever is queued.
    pub fn drain(&self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }
}

/// A kernel ICMP "ping" socket (`SOCK_DGRAM`, `IPPROTO_ICMP`): the kernel keeps its
/// identifier and delivers only the echo replies that carry it. Needs
/// `net.ipv4.ping_group_range` to include root's group (the testbed setup sets it).
pub struct Ping {
    sock: Socket,
}

/// An echo reply received on a [`Ping`] socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply {
    /// Who answered.
    pub from: Ipv4Addr,
    /// Sequence number.
    pub seq: u16,
    /// Data.
    pub data: Vec<u8>,
}

impl Ping {
    /// A ping socket in `ns` with identifier `ident`, sending from `addr`.
    ///
    /// # Errors
    /// When the socket cannot be opened or bound (ping sockets not permitted).
    pub fn open(ns: &Netns, addr: Ipv4Addr, ident: u16) -> io::Result<Self> {
        let sock = ns
            .try_run(|| {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4))?;
                s.bind(&SockAddr::from(SocketAddrV4::new(addr, ident)))?;
                Ok::<_, io::Error>(s)
            })
            .map_err(|e| io::Error::other(e.chain()))??;
        Ok(Self { sock })
    }

    /// Sends an echo request to `to`.
    ///
    /// # Errors
    /// When the kernel refuses it.
    pub fn echo(&self, to: Ipv4Addr, seq: u16, data: &[u8]) -> io::Result<()> {
        let msg = super::packet::icmp_echo(super::packet::icmp_type::ECHO_REQUEST, 0, seq, data);
        self.sock
            .send_to(&msg, &SockAddr::from(SocketAddrV4::new(to, 0)))
            .map(drop)
    }

    /// The next echo reply with sequence number `seq` within `within`.
    ///
    /// # Panics
    /// On an unexpected socket error.
    #[must_use]
    pub fn reply(&self, seq: u16, within: Duration) -> Option<EchoReply> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 2048];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("setting a read timeout");
            match self.sock.recv_from(uninit(&mut buf)) {
                Ok((n, from)) => {
                    let Some(m) = Icmp::parse(&buf[..n]) else {
                        continue;
                    };
                    if m.seq() == seq {
                        return Some(EchoReply {
                            from: from
                                .as_socket_ipv4()
                                .map_or(Ipv4Addr::UNSPECIFIED, |a| *a.ip()),
                            seq,
                            data: m.body().to_vec(),
                        });
                    }
                }
                Err(e) if is_timeout(&e) => return None,
                Err(e) if e.raw_os_error().is_some() => {}
                Err(e) => panic!("ping recv: {e}"),
            }
        }
    }
}

/// Views an initialised buffer as `MaybeUninit` for socket2's receive calls.
fn uninit(buf: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: u8 and MaybeUninit<u8> have the same layout, and the callee only writes
    // initialised bytes into the buffer.
    unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [std::mem::MaybeUninit<u8>]) }
}

/// A TCP socket in `ns` bound to `local` with `SO_REUSEADDR` and `SO_REUSEPORT`, so
/// several sockets (a listener and connections) can share one port, as hole punching
/// does.
///
/// # Errors
/// When the socket cannot be created or bound.
pub fn tcp_bound(ns: &Netns, local: SocketAddrV4) -> io::Result<Socket> {
    ns.try_run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SockAddr::from(local))?;
        Ok::<_, io::Error>(s)
    })
    .map_err(|e| io::Error::other(e.chain()))?
}

/// Connects from `local` (bound as in [`tcp_bound`]) to `to` within `within`.
///
/// # Errors
/// When the connection is refused, reset or not established in time.
pub fn tcp_connect(
    ns: &Netns,
    local: SocketAddrV4,
    to: SocketAddrV4,
    within: Duration,
) -> io::Result<TcpStream> {
    let s = tcp_bound(ns, local)?;
    s.connect_timeout(&SockAddr::from(to), within)?;
    let stream: TcpStream = s.into();
    stream.set_read_timeout(Some(ARRIVE))?;
    stream.set_write_timeout(Some(ARRIVE))?;
    Ok(stream)
}

/// A listener in `ns` on `local` (with the reuse options of [`tcp_bound`]).
///
/// # Errors
/// When it cannot be bound.
pub fn tcp_listen(ns: &Netns, local: SocketAddrV4) -> io::Result<TcpListener> {
    let s = tcp_bound(ns, local)?;
    s.listen(16)?;
    Ok(s.into())
}

/// The IPv4 peer of a stream.
///
/// # Errors
/// When the socket has no IPv4 peer.
pub fn peer(stream: &TcpStream) -> io::Result<SocketAddrV4> {
    match stream.peer_addr()? {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(io::Error::other(format!("IPv6 peer {a}"))),
    }
}

/// Writes `line` and a newline.
///
/// # Errors
/// When writing fails.
pub fn write_line(stream: &mut TcpStream, line: &str) -> io::Result<()> {
    stream.write_all(format!("{line}\n").as_bytes())
}

/// Reads one line (without the newline) within the stream's read timeout.
///
/// # Errors
/// When reading fails, times out or the peer closes first.
pub fn read_line(stream: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            _ if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&line).into_owned()),
            _ => line.push(byte[0]),
        }
    }
}

/// Sends `line` on `stream` and expects the [`TcpServer`]'s answer.
///
/// # Errors
/// When the exchange fails or the answer is not the expected one.
pub fn hello(stream: &mut TcpStream, line: &str) -> io::Result<()> {
    write_line(stream, line)?;
    let answer = read_line(stream)?;
    if answer == format!("ok {line}") {
        Ok(())
    } else {
        Err(io::Error::other(format!("unexpected answer {answer:?}")))
    }
}

/// A TCP server on a WAN host: accepts connections, reads one line from each, answers
/// `ok <line>`, records which peer sent which line, and holds every connection open
/// until it is dropped.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, SocketAddrV4)>>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens in `ns` on `addr`.
    ///
    /// # Errors
    /// When it cannot listen.
    pub fn start(ns: &Netns, addr: SocketAddrV4) -> io::Result<Self> {
        let listener = tcp_listen(ns, addr)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen, conns) = (stop.clone(), seen.clone(), conns.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, SocketAddr::V4(peer))) => {
                            let (seen, conns) = (seen.clone(), conns.clone());
                            std::thread::spawn(move || serve(stream, peer, &seen, &conns));
                        }
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(Self {
            stop,
            seen,
            conns,
            thread: Some(thread),
        })
    }

    /// The peer that sent `line`, waiting up to `within` for it.
    #[must_use]
    pub fn peer_of(&self, line: &str, within: Duration) -> Option<SocketAddrV4> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|(l, _)| l == line)
                .map(|(_, p)| *p);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes `line` on the held connection whose peer is `peer`.
    ///
    /// # Errors
    /// When there is no such connection or writing fails.
    pub fn send_to_peer(&self, peer: SocketAddrV4, line: &str) -> io::Result<()> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = conns
            .iter_mut()
            .find(|c| c.peer_addr().ok() == Some(SocketAddr::V4(peer)))
            .ok_or_else(|| io::Error::other(format!("no connection from {peer}")))?;
        write_line(conn, line)
    }

    /// Reads one line from the held connection whose peer is `peer`.
    ///
    /// # Errors
    /// When there is no such connection or nothing arrives in time.
    pub fn read_from_peer(&self, peer: SocketAddrV4) -> io::Result<String> {
        let mut conn = {
            let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
            conns
                .iter()
                .find(|c| c.peer_addr().ok() == Some(SocketAddr::V4(peer)))
                .ok_or_else(|| io::Error::other(format!("no connection from {peer}")))?
                .try_clone()?
        };
        read_line(&mut conn)
    }

    /// Closes the held connection whose peer is `peer` normally (FIN).
    ///
    /// # Errors
    /// When there is no such connection.
    pub fn close(&self, peer: SocketAddrV4) -> io::Result<()> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let i = conns
            .iter()
            .position(|c| c.peer_addr().ok() == Some(SocketAddr::V4(peer)))
            .ok_or_else(|| io::Error::other(format!("no connection from {peer}")))?;
        let conn = conns.remove(i);
        conn.shutdown(std::net::Shutdown::Both)
    }

    /// Resets the held connection whose peer is `peer` (`SO_LINGER` 0, then close).
    ///
    /// # Errors
    /// When there is no such connection.
    pub fn reset(&self, peer: SocketAddrV4) -> io::Result<()> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        let i = conns
            .iter()
            .position(|c| c.peer_addr().ok() == Some(SocketAddr::V4(peer)))
            .ok_or_else(|| io::Error::other(format!("no connection from {peer}")))?;
        let conn = conns.remove(i);
        socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO))?;
        drop(conn);
        Ok(())
    }
}

fn serve(
    mut stream: TcpStream,
    peer: SocketAddrV4,
    seen: &Mutex<Vec<(String, SocketAddrV4)>>,
    conns: &Mutex<Vec<TcpStream>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(ARRIVE));
    let line = read_line(&mut stream);
    if let Ok(line) = &line {
        let _ = write_line(&mut stream, &format!("ok {line}"));
    }
    // Held before it is announced, so whoever learns the peer can use the connection.
    conns
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(stream);
    if let Ok(line) = line {
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((line, peer));
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
