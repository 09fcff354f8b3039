//! The state file: what a running gateway publishes for `natgw status` beside the
//! pinned maps (its interfaces, settings, counters that live in user space). Written
//! by the daemon through [`crate::datapath::dirs::RuntimeDirs`], read by `natgw status`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Settings;
#[cfg(test)]
use crate::datapath::dirs::RuntimeDirs;
pub use crate::datapath::topology::Role;
use natgw_proto::prefix::Ipv4Prefix;

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// One interface natgw runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceState {
    /// Name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// LAN or WAN.
    pub role: Role,
    /// MTU at start.
    pub mtu: u32,
    /// Link kind (`veth`, ...), when the kernel reports one.
    pub kind: Option<String>,
    /// IPv4 addresses with prefix lengths.
    pub addresses: Vec<Ipv4Prefix>,
    /// XDP program attached here.
    pub xdp_program: String,
    /// How it is attached: `driver` or `skb`.
    pub xdp_mode: String,
    /// TC programs attached here (`tc_wan_ingress (ingress)`, ...).
    pub tc_programs: Vec<String>,
    /// Frames redirected into this interface are delivered (`ndo_xdp_xmit`).
    pub redirect_ok: bool,
    /// Frames received here may carry partial checksums (veth).
    pub rx_csum_partial: bool,
    /// False once the interface has disappeared.
    pub present: bool,
}

/// The state file: everything `status` shows that the maps do not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// natgw version that wrote it.
    pub natgw_version: String,
    /// Daemon pid.
    pub pid: u32,
    /// Network namespace inode.
    pub netns_inode: u64,
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Kernel map ids by map name: how `status` finds the maps when the pins are not
    /// visible (another mount namespace, as under `ip netns exec`).
    pub map_ids: BTreeMap<String, u32>,
    /// The external (WAN) address.
    pub external_address: Ipv4Addr,
    /// The external address pool (RFC 4787 REQ-2), `external_address` first.
    #[serde(default)]
    pub external_addresses: Vec<Ipv4Addr>,
    /// Interfaces, WAN first.
    pub interfaces: Vec<IfaceState>,
    /// natgw added the WAN's clsact qdisc (and removes it on exit); lets the next run
    /// remove one a crashed run left behind.
    #[serde(default)]
    pub clsact_created: bool,
    /// Effective settings.
    pub settings: Settings,
    /// The controller's own counters (ICMP errors sent, rate-limited, ...), by name;
    /// rewritten when they change, at most once a second.
    #[serde(default)]
    pub controller_counters: BTreeMap<String, u64>,
    /// The STUN responder on the external address, when it runs.
    #[serde(default)]
    pub stun: Option<StunState>,
    /// The active/standby role (`--ha`).
    #[serde(default)]
    pub ha: Option<super::keepalived::HaStatus>,
}

/// The daemon's STUN responder, for `natgw status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StunState {
    /// UDP addresses it answers on, the primary first.
    pub addresses: Vec<SocketAddrV4>,
    /// The RFC 5780 OTHER-ADDRESS (second external address, alternate port), when
    /// there is a second external address.
    pub other_address: Option<SocketAddrV4>,
    /// Whether it answers now: not while the WAN has no address, nor after binding a
    /// new external address failed (it tries again on the next address change).
    #[serde(default = "listening_by_default")]
    pub listening: bool,
    /// Why it does not answer, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_listening: Option<String>,
    /// Responder counters by name (`received`, `success`, `dropped_<reason>`, ...);
    /// rewritten with the controller counters.
    pub counters: BTreeMap<String, u64>,
}

/// State files written before the responder followed address changes only had one
/// while it listened.
const fn listening_by_default() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, FileConfig, Overrides};
    use crate::datapath::dirs::StateError;

    fn sample_state() -> StateFile {
        let flags = Overrides {
            wan: Some("wan0".into()),
            lan: vec!["lan0".into()],
            ..Overrides::default()
        };
        let (settings, _) = resolve(&FileConfig::default(), &flags).unwrap();
        StateFile {
            version: STATE_VERSION,
            natgw_version: "0.1.0".into(),
            pid: 42,
            netns_inode: 4_026_531_840,
            started_unix: 1_700_000_000,
            pin_dir: "/sys/fs/bpf/natgw/net-4026531840".into(),
            map_ids: BTreeMap::from([("NAT_FWD".to_owned(), 7)]),
            external_address: Ipv4Addr::new(192, 0, 2, 1),
            external_addresses: vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
            interfaces: vec![IfaceState {
                name: "wan0".into(),
                ifindex: 2,
                role: Role::Wan,
                mtu: 1500,
                kind: Some("veth".into()),
                addresses: vec!["192.0.2.1/24".parse().unwrap()],
                xdp_program: "xdp_wan".into(),
                xdp_mode: "driver".into(),
                tc_programs: vec!["tc_wan_ingress (ingress)".into()],
                redirect_ok: true,
                rx_csum_partial: true,
                present: true,
            }],
            clsact_created: true,
            settings,
            controller_counters: BTreeMap::from([("icmp_rate_limited".to_owned(), 1)]),
            stun: Some(StunState {
                addresses: vec!["192.0.2.1:3478".parse().unwrap()],
                other_address: None,
                listening: true,
                not_listening: None,
                counters: BTreeMap::from([("success".to_owned(), 2)]),
            }),
            ha: None,
        }
    }

    #[test]
    fn state_file_round_trips_and_names_the_running_pid() {
        let root =
            std::env::temp_dir().join(format!("natgw-state-test-{}-roundtrip", std::process::id()));
        let d = RuntimeDirs::new(&root.join("pins"), &root.join("run"), 4_026_531_840);
        let lock = d.lock().unwrap();
        let state = sample_state();
        d.write_state(&state).unwrap();
        assert_eq!(d.read_state::<StateFile>().unwrap(), state);
        // A second natgw learns the first one's pid from this file.
        match d.lock() {
            Err(StateError::AlreadyRunning { pid: Some(42) }) => {}
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        d.remove_state().unwrap();
        drop(lock);
        assert!(!d.state_dir.exists());
        let _ = std::fs::remove_dir_all(root);
    }
}
