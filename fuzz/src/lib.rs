//! natgw's PCP and NAT-PMP modules compiled from natgw's own source files, so the
//! fuzz targets exercise exactly the code the daemon runs while natgw stays a binary
//! crate. The module tree mirrors natgw's (`crate::prefix`, `crate::pcp::*`) so the
//! files' own `use` paths resolve unchanged. The CLI client (`pcp/client.rs`) is left
//! out: it needs clap and anyhow and parses nothing the server does not.

// Items the daemon or the CLI use but the fuzz targets do not.
#![allow(dead_code)]

#[path = "../../natgw/src/prefix.rs"]
pub mod prefix;

/// `natgw::pcp`, minus the client.
pub mod pcp;
