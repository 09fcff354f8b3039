//! What the packet targets (`packet_parse`, `packet_rewrite`, `icmp_error`, `csum`)
//! share: an Internet checksum oracle written here from RFC 1071 rather than taken
//! from the code under test ([`oracle`]), a packet buffer that records where the code
//! under test read and wrote ([`tracked`]), the assertions the rewrite targets make
//! ([`checks`]), the fuzz input's layout and the fix-ups
//! that make a fuzzed frame's checksums right before it is rewritten ([`input`]), and
//! the hand-built frames the targets are seeded with ([`seeds`]).

pub mod checks;
pub mod input;
pub mod oracle;
pub mod seeds;
pub mod tracked;
