//! Tells the service manager (systemd, `Type=notify`; see sd_notify(3)) what
//! `natgw run` is doing: `READY=1` once the data path is attached, forwarding is on
//! and the services answer; `RELOADING=1` and `READY=1` around a SIGHUP reload;
//! `STOPPING=1` when it stops. Each message is one datagram to `$NOTIFY_SOCKET`, a
//! socket path or an abstract socket written `@name`. Without `$NOTIFY_SOCKET`
//! (natgw started by hand, by a test or by another supervisor) nothing is sent.
//!
//! Written here rather than taken from a crate: the protocol is one datagram, and
//! the `sd-notify` crate (0.5) connects to `@name` as a file path instead of the
//! abstract socket systemd means by it.
//!
//! A notification that cannot be delivered is logged and otherwise ignored: the
//! gateway works the same whether or not anyone listens.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use log::{debug, warn};

/// The environment variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// `READY=1` with a one-line `STATUS=`: start-up (or a reload) is complete.
pub fn ready(status: &str) {
    send("ready", &format!("READY=1\nSTATUS={}\n", one_line(status)));
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd 253+ asks for with it: a SIGHUP
/// reload begins; [`ready`] ends it.
pub fn reloading() {
    let now_usec = crate::datapath::system::monotonic_ns() / 1_000;
    send(
        "reloading",
        &format!("RELOADING=1\nMONOTONIC_USEC={now_usec}\nSTATUS=reloading the configuration\n"),
    );
}

/// `STOPPING=1`: natgw is shutting down (the data path stays unless flushed).
pub fn stopping(status: &str) {
    send(
        "stopping",
        &format!("STOPPING=1\nSTATUS={}\n", one_line(status)),
    );
}

fn send(what: &str, message: &str) {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    match send_to(&target, message.as_bytes()) {
        Ok(()) => debug!("notify.sent state={what}"),
        Err(e) => warn!(
            "notify.failed state={what} socket={} error=\"{e}\"",
            target.to_string_lossy()
        ),
    }
}

/// Sends `message` as one datagram to `target`: a socket path, or `@name` for the
/// abstract socket `name`.
///
/// # Errors
/// When `target` is empty or no socket listens there.
pub fn send_to(target: &OsStr, message: &[u8]) -> io::Result<()> {
    let address = match target.as_bytes() {
        [] => return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty address")),
        [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
        _ => SocketAddr::from_pathname(target)?,
    };
    let socket = UnixDatagram::unbound()?;
    let sent = socket.send_to_addr(message, &address)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ))
    }
}

/// `STATUS=` ends at the end of its line.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_socket_gets_the_message_as_one_datagram() {
        let dir = std::env::temp_dir().join(format!("natgw-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), b"READY=1\nSTATUS=up\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        let name = format!("natgw-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send_to(OsStr::new(&format!("@{name}")), b"STOPPING=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
        // No file of that name was involved.
        assert!(!std::path::Path::new(&format!("@{name}")).exists());
    }

    #[test]
    fn nothing_listening_is_an_error_not_a_panic() {
        let missing = std::env::temp_dir().join("natgw-notify-nobody-listens.sock");
        assert!(send_to(missing.as_os_str(), b"READY=1\n").is_err());
        assert!(send_to(OsStr::new(""), b"READY=1\n").is_err());
    }
}
