//! The testbed's error type: every failure names the object it was acting on
//! ("creating veth lan0 in ngw123x1-gw") and missing privileges are reported
//! as such instead of as a bare `EPERM`.

use std::io;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while building, using or tearing down a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process is not running as root, so namespaces cannot be created.
    #[error(
        "the testbed needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network \
         namespaces; run as root, e.g. `sudo -E cargo test`"
    )]
    NotRoot,

    /// The kernel refused an operation for lack of privilege (`EPERM`/`EACCES`).
    #[error(
        "{what}: permission denied; the testbed needs CAP_SYS_ADMIN and CAP_NET_ADMIN \
         (run as root, outside a restricted container)"
    )]
    PermissionDenied {
        /// The operation, naming its object.
        what: String,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },

    /// Any other OS or netlink failure.
    #[error("{what}")]
    Os {
        /// The operation, naming its object.
        what: String,
        /// The underlying OS error (netlink errors are converted to their errno).
        #[source]
        source: io::Error,
    },

    /// A namespace name that cannot be a file name under `/run/netns`.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidNamespaceName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A sysctl key that is not a relative path below `/proc/sys`.
    #[error(
        "invalid sysctl key {key:?}: expected a path below /proc/sys such as \
         \"net/ipv4/ip_forward\" (or \"net.ipv4.ip_forward\")"
    )]
    InvalidSysctlKey {
        /// The rejected key.
        key: String,
    },
}

impl Error {
    /// Wraps an OS error, classifying `EPERM`/`EACCES` as [`Error::PermissionDenied`].
    pub(crate) fn os(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        match source.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Self::PermissionDenied { what, source },
            _ => Self::Os { what, source },
        }
    }

    /// Wraps an rtnetlink failure, converting a kernel NACK into its errno.
    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        let source = match source {
            rtnetlink::Error::NetlinkError(message) => message.to_io(),
            other => io::Error::other(other.to_string()),
        };
        Self::os(what, source)
    }

    /// Renders the error with its whole source chain on one line, for logs.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_is_reported_as_missing_privilege() {
        let err = Error::os(
            "creating namespace x",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(matches!(err, Error::PermissionDenied { .. }));
        assert!(err.to_string().contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn chain_includes_the_os_cause() {
        let err = Error::os(
            "unlinking /run/netns/x",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        let text = err.chain();
        assert!(text.starts_with("unlinking /run/netns/x: "), "{text}");
        assert!(text.len() > "unlinking /run/netns/x: ".len());
    }

    #[test]
    fn netlink_nack_becomes_its_errno() {
        let mut message = rtnetlink::packet_core::ErrorMessage::default();
        message.code = std::num::NonZeroI32::new(-libc::EEXIST);
        let err = Error::netlink(
            "creating veth lan0",
            rtnetlink::Error::NetlinkError(message),
        );
        match err {
            Error::Os { source, .. } => assert_eq!(source.raw_os_error(), Some(libc::EEXIST)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
