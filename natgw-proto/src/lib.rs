//! natgw's protocols without I/O, in the manner of smoltcp's `wire` and quinn-proto:
//! every codec is a typed view over bytes with `parse`/`emit` (or `to_bytes`), and
//! every engine is a state machine — a datagram, where it came from and the time go
//! in; what to send and what happened come out. No sockets, timers, threads or
//! logging, so everything here is unit-tested and fuzzed as it is; `natgw` runs the
//! engines on sockets (its services and clients).
//!
//! - [`pcp`]: PCP (RFC 6887) and NAT-PMP (RFC 6886): codecs, the server engine and the
//!   [`pcp::table::MappingTable`] it drives, its policy, an in-memory table.
//! - [`stun`]: STUN (RFC 8489): the codec, the Binding responder, the client side and
//!   RFC 5780 NAT behaviour discovery.
//! - [`turn`]: TURN (RFC 8656): the relay server's codec (ChannelData, TCP framing,
//!   over the STUN codec), long-term authentication and the server engine.
//! - [`punch`]: the hole-punching protocol: codec, the rendezvous engine, the prober,
//!   and the demultiplexing of STUN and punch messages on one port.
//! - [`upnp`]: UPnP IGD:1/IGD:2: SSDP discovery and its responder engine, HTTP
//!   framing, descriptions, SOAP control, GENA, and the IGD engine that maps ports
//!   through the same [`pcp::table::MappingTable`] as PCP and NAT-PMP.
//! - [`ha`]: state replication between an active/standby pair: the authenticated
//!   frame codec, the records, and the sender and receiver engines.
//! - [`wire`]: byte ranges and big-endian fields, shared by the codecs.
//! - [`prefix`]: IPv4 prefixes.
//! - [`util`]: a token bucket and rate limiter, random bytes.

pub mod ha;
pub mod pcp;
pub mod prefix;
pub mod punch;
pub mod stun;
pub mod turn;
pub mod upnp;
pub mod util;
pub mod wire;
