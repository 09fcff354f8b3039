//! natgw's controller: it loads and attaches the eBPF data path and owns its maps,
//! runs the PCP/NAT-PMP server and the STUN responder on the gateway, and serves the
//! operator; and the traversal tools (`natgw punch`, `natgw rendezvous`, `natgw stun
//! probe`).
//!
//! Dependencies run one way:
//!
//! ```text
//! cli ──► daemon ──► services ──► natgw-proto (protocols without I/O)
//!  │        │  └───► nat_table ──► datapath ──► natgw-common (map layouts)
//!  └──────► clients ─► services
//! ```
//!
//! - [`cli`]: the command line (the only module that names clap) and what it prints.
//! - [`daemon`]: `natgw run`: deploys the data path and supervises everything.
//! - [`datapath`]: the eBPF object, its maps and pins, netlink, the host.
//! - [`nat_table`]: the mapping table over the maps: garbage collection and explicit
//!   mappings.
//! - [`services`]: the protocol engines on sockets (PCP, STUN, the rendezvous).
//! - [`clients`]: the client side: `natgw pcp`, `natgw stun probe`, `natgw punch`.
//! - [`config`]: the settings and the configuration file.

pub mod cli;
pub mod clients;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod nat_table;
pub mod services;
