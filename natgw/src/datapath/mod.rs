//! The data path as the controller sees it: deployed on the host as one handle with
//! an undo log ([`deploy`]) over the interfaces found at start ([`topology`]); the
//! eBPF object and its programs ([`loader`]), their maps ([`maps`]) pinned under bpffs with the runtime directory
//! and lock ([`dirs`]), the interfaces and addresses over netlink ([`netlink`],
//! [`addresses`], [`pool`]), the host's privileges and sysctls ([`system`]) and the
//! programs' log records ([`logging`]).

pub mod addresses;
pub mod deploy;
pub mod dirs;
pub mod layout;
pub mod loader;
pub mod logging;
pub mod maps;
pub mod netlink;
pub mod pool;
pub mod system;
pub mod topology;
