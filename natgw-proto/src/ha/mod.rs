//! State replication between an active/standby pair of gateways, in the manner of
//! VPP's NAT44-EI HA: the active sends what changes in its NAT table (mappings and
//! sessions created, refreshed and deleted, explicit mappings) to the standby's
//! controller over one TCP connection, the standby installs it in its own maps and
//! acknowledges it.
//!
//! - [`wire`]: the frame codec (a fixed header, a body, an HMAC-SHA256 tag) and the
//!   records a body carries.
//! - [`engine`]: the sans-IO engines: [`engine::Channel`] (handshake, framing,
//!   authentication, sequence numbers), [`engine::Sender`] (the active's side:
//!   batching, resyncs, acknowledgements, lag) and [`engine::Receiver`] (the
//!   standby's: deliveries to install, acknowledgements).
//!
//! Time never crosses the wire as a timestamp: the clocks of two machines have
//! nothing in common, so records carry ages ("last outbound packet 1.2 s ago").

pub mod engine;
pub mod wire;
