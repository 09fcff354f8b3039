//! `natgw::pcp`, minus the client: each module is natgw's own file.

#[path = "../../../natgw/src/pcp/natpmp.rs"]
pub mod natpmp;
#[path = "../../../natgw/src/pcp/policy.rs"]
pub mod policy;
#[path = "../../../natgw/src/pcp/server.rs"]
pub mod server;
#[path = "../../../natgw/src/pcp/table.rs"]
pub mod table;
#[path = "../../../natgw/src/pcp/testing.rs"]
pub mod testing;
#[path = "../../../natgw/src/pcp/wire.rs"]
pub mod wire;
