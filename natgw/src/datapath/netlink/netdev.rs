//! The generic-netlink `netdev` family (Linux 6.3+): which XDP actions an interface
//! supports. natgw needs one bit of it, `NETDEV_XDP_ACT_NDO_XMIT`: whether a frame
//! redirected into the interface is delivered. A veth sets it only while its peer
//! runs an XDP program or has GRO enabled; without it a redirected frame is dropped
//! silently.
//!
//! The family is small enough that the two requests are written by hand: resolve the
//! family id with `CTRL_CMD_GETFAMILY`, then `NETDEV_CMD_DEV_GET` per interface. The
//! encoding and parsing are pure functions over byte slices.

use std::io;

use rtnetlink::sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

/// `NETDEV_XDP_ACT_NDO_XMIT` from `linux/netdev.h`: the device implements
/// `ndo_xdp_xmit`, so `XDP_REDIRECT` into it works.
pub const NETDEV_XDP_ACT_NDO_XMIT: u64 = 1 << 2;

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

const NETDEV_FAMILY_NAME: &str = "netdev";
const NETDEV_FAMILY_VERSION: u8 = 1;
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;

/// Attribute type bits that are flags, not part of the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A failed `netdev` query.
#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    /// Socket I/O failed.
    #[error("generic netlink: {0}")]
    Io(#[from] io::Error),
    /// The kernel has no `netdev` family (before Linux 6.3).
    #[error("the kernel has no netdev generic-netlink family (Linux 6.3+ reports XDP features)")]
    NoFamily,
    /// The interface is gone.
    #[error("no interface with index {0}")]
    NoDevice(u32),
    /// The kernel answered with an error code.
    #[error("generic netlink request failed: {0}")]
    Kernel(io::Error),
    /// The answer did not parse.
    #[error("malformed generic netlink reply: {0}")]
    Malformed(&'static str),
}

/// A connected generic-netlink socket with the `netdev` family resolved.
#[derive(Debug)]
pub struct Netdev {
    socket: Socket,
    family: u16,
    seq: u32,
}

impl Netdev {
    /// Opens the socket and resolves the family id.
    pub fn open() -> Result<Self, GenlError> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        set_receive_timeout(&socket)?;
        let mut me = Self {
            socket,
            family: 0,
            seq: 0,
        };
        let mut name = NETDEV_FAMILY_NAME.as_bytes().to_vec();
        name.push(0);
        let reply = me.request(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            1,
            &[(CTRL_ATTR_FAMILY_NAME, &name)],
        );
        let attrs = match reply {
            Ok(attrs) => attrs,
            Err(GenlError::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(GenlError::NoFamily)
            }
            Err(e) => return Err(e),
        };
        me.family = find_attr(&attrs, CTRL_ATTR_FAMILY_ID)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_ne_bytes([v[0], v[1]]))
            .ok_or(GenlError::Malformed("no family id"))?;
        Ok(me)
    }

    /// The `NETDEV_XDP_ACT_*` bits of interface `ifindex`.
    pub fn xdp_features(&mut self, ifindex: u32) -> Result<u64, GenlError> {
        let attrs = match self.request(
            self.family,
            NETDEV_CMD_DEV_GET,
            NETDEV_FAMILY_VERSION,
            &[(NETDEV_A_DEV_IFINDEX, &ifindex.to_ne_bytes())],
        ) {
            Ok(attrs) => attrs,
            Err(GenlError::Kernel(e)) if e.raw_os_error() == Some(libc::ENODEV) => {
                return Err(GenlError::NoDevice(ifindex))
            }
            Err(e) => return Err(e),
        };
        let v = find_attr(&attrs, NETDEV_A_DEV_XDP_FEATURES)
            .ok_or(GenlError::Malformed("no xdp-features attribute"))?;
        read_uint(v).ok_or(GenlError::Malformed("xdp-features of unexpected size"))
    }

    /// Sends one request and returns the attributes of its single reply.
    fn request(
        &mut self,
        family: u16,
        cmd: u8,
        version: u8,
        attrs: &[(u16, &[u8])],
    ) -> Result<Vec<u8>, GenlError> {
        self.seq = self.seq.wrapping_add(1);
        let msg = encode_request(family, cmd, version, self.seq, attrs);
        self.socket.send(&msg, 0)?;
        loop {
            let mut buf = Vec::with_capacity(8192);
            self.socket.recv(&mut buf, 0)?;
            match parse_reply(&buf, self.seq)? {
                Some(attrs) => return Ok(attrs.to_vec()),
                None => continue, // a stale answer to an earlier, timed-out request
            }
        }
    }
}

/// Never hang the GC loop on a lost answer.
fn set_receive_timeout(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized timeval.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            libc::socklen_t::try_from(size_of::<libc::timeval>()).unwrap_or(16),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A generic-netlink request: `nlmsghdr`, `genlmsghdr`, then the attributes.
#[must_use]
pub fn encode_request(
    family: u16,
    cmd: u8,
    version: u8,
    seq: u32,
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut msg = vec![0u8; NLMSG_HDRLEN];
    msg.extend_from_slice(&[cmd, version, 0, 0]);
    for (ty, value) in attrs {
        let len = NLA_HDRLEN + value.len();
        msg.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize(align4(msg.len()), 0);
    }
    let total = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    msg[0..4].copy_from_slice(&total.to_ne_bytes());
    msg[4..6].copy_from_slice(&family.to_ne_bytes());
    msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    msg
}

/// The attribute bytes of the reply to request `seq`; `None` for a message about
/// another request; an error for `NLMSG_ERROR` with a non-zero code.
pub fn parse_reply(buf: &[u8], seq: u32) -> Result<Option<&[u8]>, GenlError> {
    let hdr = buf
        .get(..NLMSG_HDRLEN)
        .ok_or(GenlError::Malformed("short netlink header"))?;
    let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
    let msg_seq = u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
    let body = buf
        .get(NLMSG_HDRLEN..len.max(NLMSG_HDRLEN))
        .ok_or(GenlError::Malformed("netlink length beyond datagram"))?;
    if msg_seq != seq {
        return Ok(None);
    }
    if ty == NLMSG_ERROR {
        let code = body
            .get(..4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .ok_or(GenlError::Malformed("short error message"))?;
        return Err(GenlError::Kernel(io::Error::from_raw_os_error(
            code.checked_neg().unwrap_or(libc::EIO),
        )));
    }
    body.get(GENL_HDRLEN..)
        .map(Some)
        .ok_or(GenlError::Malformed("short generic netlink header"))
}

/// The value of the first attribute of type `ty`.
#[must_use]
pub fn find_attr(mut attrs: &[u8], ty: u16) -> Option<&[u8]> {
    while attrs.len() >= NLA_HDRLEN {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let this = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > attrs.len() {
            return None;
        }
        if this == ty {
            return Some(&attrs[NLA_HDRLEN..len]);
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    None
}

/// A netlink `uint`: 4 or 8 bytes, host order.
fn read_uint(v: &[u8]) -> Option<u64> {
    match *v {
        [a, b, c, d] => Some(u64::from(u32::from_ne_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(u64::from_ne_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
}

/// Whether `XDP_REDIRECT` into an interface with these features is delivered.
#[must_use]
pub const fn redirect_ok(xdp_features: u64) -> bool {
    xdp_features & NETDEV_XDP_ACT_NDO_XMIT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(align4(v.len()), 0);
        v
    }

    fn reply(ty: u16, seq: u32, genl_and_attrs: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN];
        m.extend_from_slice(genl_and_attrs);
        let len = u32::try_from(m.len()).unwrap();
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m
    }

    #[test]
    fn getfamily_request_is_encoded_like_the_kernel_expects() {
        let msg = encode_request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, 7, &[(2, b"netdev\0")]);
        // 16 header + 4 genl + 4 nla header + 7 name, padded to 32.
        assert_eq!(msg.len(), 32);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), 0x10);
        assert_eq!(u16::from_ne_bytes(msg[6..8].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(msg[8..12].try_into().unwrap()), 7);
        assert_eq!(&msg[16..20], &[3, 1, 0, 0]);
        assert_eq!(u16::from_ne_bytes(msg[20..22].try_into().unwrap()), 11);
        assert_eq!(&msg[24..31], b"netdev\0");
    }

    #[test]
    fn xdp_features_are_found_among_attributes() {
        let mut body = vec![NETDEV_CMD_DEV_GET, 1, 0, 0];
        body.extend(attr(NETDEV_A_DEV_IFINDEX, &5u32.to_ne_bytes()));
        body.extend(attr(2, &[0; 4])); // pad
        body.extend(attr(NETDEV_A_DEV_XDP_FEATURES, &0x47u64.to_ne_bytes()));
        let msg = reply(30, 9, &body);
        let attrs = parse_reply(&msg, 9).unwrap().unwrap();
        let v = find_attr(attrs, NETDEV_A_DEV_XDP_FEATURES).unwrap();
        assert_eq!(read_uint(v), Some(0x47));
        assert!(redirect_ok(0x47));
        // A veth whose peer runs neither XDP nor GRO: BASIC | REDIRECT | RX_SG.
        assert!(!redirect_ok(0x23));
        assert_eq!(find_attr(attrs, 99), None);
    }

    #[test]
    fn kernel_errors_and_foreign_replies_are_told_apart() {
        let mut body = (-libc::ENODEV).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        let msg = reply(NLMSG_ERROR, 3, &body);
        match parse_reply(&msg, 3) {
            Err(GenlError::Kernel(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENODEV)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_reply(&msg, 4), Ok(None)));
        assert!(matches!(
            parse_reply(&msg[..10], 3),
            Err(GenlError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_attributes_end_the_search() {
        let mut a = attr(1, &[1, 2, 3, 4]);
        a[0] = 200; // length beyond the buffer
        assert_eq!(find_attr(&a, 1), None);
        assert_eq!(read_uint(&[1, 2, 3]), None);
    }
}
