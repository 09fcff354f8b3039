//! TURN (RFC 8656): a relay server for peers that cannot reach each other directly,
//! without I/O: the codec, long-term authentication and the server engine of
//! `natgw rendezvous`'s relay (issue #14); the socket loop is `natgw::services::turn`.
//!
//! - [`wire`]: TURN's methods and error codes, ChannelData, and the [`wire::Framer`]
//!   that cuts a TCP stream into STUN messages and ChannelData frames. TURN's
//!   attributes are decoded by the STUN codec ([`crate::stun::wire`]), which TURN
//!   extends rather than copies: one TLV walk, one FINGERPRINT, one XOR encoding.
//! - [`auth`]: RFC 8489 long-term credentials — the MD5 key, MESSAGE-INTEGRITY
//!   checked and signed over the raw message, stateless nonces, static users and
//!   coturn's shared-secret scheme.
//! - [`engine`]: the server as a state machine, in the manner of quinn-proto.
//! - [`client`]: a client as a state machine (one allocation: Allocate with the 401
//!   challenge, refreshes, permissions, channels, Send/Data), used by `natgw punch`
//!   to fall back to a relay.
//!
//! # The engine
//!
//! [`engine::Server::on_message`] takes the time ([`engine::Now`]: a monotonic
//! instant for lifetimes, Unix seconds for nonces and shared-secret usernames), the
//! client's 5-tuple (UDP or TCP, client and server address) and one message — a UDP
//! datagram, or one [`wire::Frame`] of a TCP stream — and returns [`engine::Action`]s:
//! replies to the client, datagrams to send from a relay address to a peer, and
//! events (allocation created, ended). [`engine::Server::on_peer_datagram`] takes what
//! a relay socket received; [`engine::Server::expire`] ends what has run out and
//! [`engine::Server::poll_timeout`] says when it is next due. Relay addresses come
//! from an [`engine::RelayAllocator`] the service implements (a UDP socket per
//! allocation, bound in a configured port range); [`engine::testing::FakeAllocator`]
//! stands in for it in tests and fuzzing.
//!
//! Behaviour:
//! - Every request but Binding needs long-term credentials (RFC 8489 §9.2): without
//!   MESSAGE-INTEGRITY → 401 with REALM and NONCE; USERNAME, REALM or NONCE missing →
//!   400; unknown user, expired shared-secret username, another realm or a wrong
//!   MESSAGE-INTEGRITY → 401; a nonce past its lifetime (or from another client
//!   address, or forged) → 438 with a new one. Responses to authenticated requests
//!   carry MESSAGE-INTEGRITY; FINGERPRINT when the request had one.
//! - Allocate: REQUESTED-TRANSPORT UDP only (missing → 400, other → 442); IPv4 relays
//!   only (REQUESTED-ADDRESS-FAMILY IPv6 → 440); LIFETIME clamped to [600 s, 3600 s]
//!   by default; DONT-FRAGMENT accepted and passed to the service with each datagram;
//!   EVEN-PORT asks the allocator for an even port, and with R also holds the next one
//!   for 30 s behind a RESERVATION-TOKEN, which a later Allocate redeems (an unknown
//!   or lapsed token → 508; a token with EVEN-PORT or REQUESTED-ADDRESS-FAMILY → 400).
//!   A second Allocate on the same 5-tuple → 437, but a retransmission (same
//!   transaction ID) gets the first response again. Per-user quota → 486; the total
//!   quota or an allocator out of ports → 508.
//! - Refresh: 437 without an allocation, 441 from another user than the one who made
//!   it (CreatePermission and ChannelBind too); LIFETIME 0 deletes.
//! - CreatePermission: per peer IP, 300 s, all peers of a request or none; ChannelBind:
//!   600 s, installs the peer's permission too; a channel outside 0x4000..=0x7FFF (RFC 5766's range, which coturn's
//!   clients use; RFC 8656 narrowed it to 0x4FFF), a
//!   channel bound to another peer, or a peer bound to another channel → 400.
//! - Peers: IPv4 only (IPv6 → 443). Denied ranges (403, SSRF protection) by default
//!   0/8, 127/8, 10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16, 224/3, plus the
//!   host's own addresses; an operator allow-list overrides both. One exception:
//!   the server's own relay addresses ([`engine::Config::relay_addresses`]) on a
//!   port of the relay range are other allocations of this server, and allowed
//!   (relay to relay: ICE's relayed pairs, two punch peers on one relay);
//!   permissions for them are granted, and every datagram to or from them is
//!   checked with its port.
//! - Relaying: a Send indication or ChannelData on a bound channel goes to the peer
//!   when a permission exists for its IP; a peer's datagram reaches the client only
//!   with a permission for the peer's IP, as ChannelData when a channel is bound
//!   (padded to 4 bytes over TCP) and as a Data indication otherwise. Everything else
//!   is dropped and counted by reason ([`engine::DropReason`]), as is traffic over the
//!   per-allocation bandwidth cap (a token bucket of bytes shared by both
//!   directions).
//!
//! Limits, on purpose or for later: UDP relays over IPv4 only (no RFC 6062 TCP
//! relays, no RFC 6156 IPv6 or ADDITIONAL-ADDRESS-FAMILY); no TLS/DTLS (the service's
//! business); no RFC 8489 MESSAGE-INTEGRITY-SHA256, USERHASH or PASSWORD-ALGORITHMS
//! (ignored when sent, MESSAGE-INTEGRITY used); usernames and passwords are not run
//! through SASLprep; transactions other than Allocate are not remembered, so a
//! retransmitted Refresh with LIFETIME 0 gets 437; a channel number is free for
//! another peer as soon as its binding expires (RFC 8656 §12 asks for a 5-minute
//! pause); ICMP from peers is not relayed. `poll_timeout` and `expire` scan every
//! allocation: fine for thousands, not for millions.

pub mod auth;
pub mod client;
pub mod engine;
pub mod wire;
