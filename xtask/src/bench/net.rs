//! The bench's own topology, three namespaces in a line, built over netlink:
//!
//! ```text
//!  gen  bgen0 10.0.0.2/16 ──veth── blan0 10.0.0.1/16  gw  bwan0 192.0.2.1/24 ──veth── brcv0 192.0.2.2/24  rcv
//! ```
//!
//! The generator never uses its kernel stack (its frames come from `xdp_gen` in
//! `BPF_PROG_TEST_RUN` live-frame mode, with sources anywhere in 10.0.0.0/16), and the
//! receiver counts and drops in XDP, so neither needs routes; the gateway reaches both
//! subnets directly and knows the receiver's MAC address from a permanent neighbour
//! entry, so the first packet already takes the fast path.
//!
//! The measured traffic goes one [`Direction`]: LAN → WAN (the generator in `gen`
//! sends into `blan0`, the receiver counts on `brcv0`), or WAN → LAN with the roles
//! swapped (the generator in `rcv` sends into `bwan0`, the receiver counts on
//! `bgen0`); [`Bench::sender`], [`Bench::receiver`] and [`Bench::ingress`] name the
//! ends for a direction. For WAN → LAN the gateway also gets permanent neighbour
//! entries for the internal addresses ([`Bench::add_lan_neighbours`]).
//!
//! The veths that receive traffic (`blan0` from the generator, `brcv0` from the
//! gateway) run their NAPI in threads ([`Bench::thread_napi`]), which the bench pins to
//! a CPU of its choosing; by default NAPI would run in softirq on whichever CPU queued
//! the frames, i.e. the generator's.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context as _, Result};
use testbed::{Netns, Rtnl, NAME_PREFIX};

/// Generator-side address of the bench LAN (the generator's sources vary within
/// [`LAN_PREFIX_LEN`]).
pub const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The gateway's LAN address.
pub const GW_LAN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Prefix length of the bench LAN.
pub const LAN_PREFIX_LEN: u8 = 16;
/// The gateway's WAN address: natgw's and masquerade's external address.
pub const GW_WAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The receiver's address, where every generated packet goes.
pub const RCV_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// Prefix length of the bench WAN.
pub const WAN_PREFIX_LEN: u8 = 24;

/// Interface names, distinct from the testbed's so their NAPI threads (`napi/NAME-ID`)
/// can be told apart.
pub const GEN_IF: &str = "bgen0";
/// The gateway's LAN interface.
pub const GW_LAN_IF: &str = "blan0";
/// The gateway's WAN interface.
pub const GW_WAN_IF: &str = "bwan0";
/// The receiver's interface.
pub const RCV_IF: &str = "brcv0";

/// Fixed MAC addresses, so the generator's frames (whose template is set when its
/// program is loaded) fit every topology built afterwards.
pub const GEN_MAC: [u8; 6] = [0x02, 0x62, 0x65, 0x6e, 0x63, 0x01];
/// `blan0`'s MAC address: the destination of every generated frame.
pub const GW_LAN_MAC: [u8; 6] = [0x02, 0x62, 0x65, 0x6e, 0x63, 0x02];
/// `bwan0`'s MAC address.
pub const GW_WAN_MAC: [u8; 6] = [0x02, 0x62, 0x65, 0x6e, 0x63, 0x03];
/// `brcv0`'s MAC address.
pub const RCV_MAC: [u8; 6] = [0x02, 0x62, 0x65, 0x6e, 0x63, 0x04];

/// Which way the measured traffic crosses the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// From the internal hosts out (the generator in `gen`, the receiver in `rcv`).
    LanToWan,
    /// From the outside in, to existing mappings (the generator in `rcv`, the receiver
    /// in `gen`).
    WanToLan,
}

impl Direction {
    /// For people.
    pub const fn label(self) -> &'static str {
        match self {
            Direction::LanToWan => "LAN → WAN",
            Direction::WanToLan => "WAN → LAN",
        }
    }

    /// The generated frames' destination and source MAC addresses: the gateway's
    /// ingress veth and the sender's.
    pub const fn macs(self) -> ([u8; 6], [u8; 6]) {
        match self {
            Direction::LanToWan => (GW_LAN_MAC, GEN_MAC),
            Direction::WanToLan => (GW_WAN_MAC, RCV_MAC),
        }
    }
}

/// One end of a direction: a namespace and one of its veths.
#[derive(Clone, Copy)]
pub struct End<'a> {
    /// The namespace.
    pub ns: &'a Netns,
    /// The veth.
    pub iface: &'a Iface,
    /// Its name.
    pub name: &'static str,
}

/// Bench ids start here so they never meet the testbed's ids of the same process.
static NEXT_ID: AtomicU32 = AtomicU32::new(1000);

/// An interface as the bench needs it.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Index in its namespace.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
}

/// The three namespaces, wired; removed on drop.
pub struct Bench {
    /// Where the generator runs.
    pub gen: Netns,
    /// The gateway (natgw, nftables or plain forwarding).
    pub gw: Netns,
    /// The receiver.
    pub rcv: Netns,
    /// `bgen0`.
    pub gen_if: Iface,
    /// `blan0`.
    pub lan_if: Iface,
    /// `bwan0`.
    pub wan_if: Iface,
    /// `brcv0`.
    pub rcv_if: Iface,
}

impl Bench {
    /// Creates the namespaces, veth pairs, addresses and the gateway's neighbour entry.
    pub fn create() -> Result<Bench> {
        let id = format!(
            "{NAME_PREFIX}{}x{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let create = |role: &str| {
            Netns::create(&format!("{id}-{role}"))
                .with_context(|| format!("creating namespace {id}-{role}"))
        };
        let (gen, gw, rcv) = (create("bgen")?, create("bgw")?, create("brcv")?);

        for key in [
            "net/ipv4/conf/all/rp_filter",
            "net/ipv4/conf/default/rp_filter",
        ] {
            gw.set_sysctl(key, "0")?;
        }
        gw.set_sysctl("net/ipv4/ip_forward", "1")?;

        let open = |ns: &Netns| {
            std::fs::File::open(ns.path())
                .with_context(|| format!("opening {}", ns.path().display()))
        };
        let (gen_fd, rcv_fd) = (open(&gen)?, open(&rcv)?);
        gw.try_run(|| -> Result<()> {
            let rtnl = Rtnl::connect(gw.name())?;
            rtnl.add_veth(GW_LAN_IF, GEN_IF, gen_fd.as_fd(), gen.name())?;
            rtnl.add_veth(GW_WAN_IF, RCV_IF, rcv_fd.as_fd(), rcv.name())?;
            rtnl.set_mac(GW_LAN_IF, GW_LAN_MAC)?;
            rtnl.set_mac(GW_WAN_IF, GW_WAN_MAC)?;
            rtnl.add_ipv4(GW_LAN_IF, GW_LAN_ADDR, LAN_PREFIX_LEN)?;
            rtnl.add_ipv4(GW_WAN_IF, GW_WAN_ADDR, WAN_PREFIX_LEN)?;
            rtnl.set_up("lo")?;
            rtnl.set_up(GW_LAN_IF)?;
            rtnl.set_up(GW_WAN_IF)?;
            Ok(())
        })??;
        let gen_if = gen.try_run(|| -> Result<Iface> {
            let rtnl = Rtnl::connect(gen.name())?;
            rtnl.set_mac(GEN_IF, GEN_MAC)?;
            rtnl.add_ipv4(GEN_IF, GEN_ADDR, LAN_PREFIX_LEN)?;
            rtnl.set_up("lo")?;
            rtnl.set_up(GEN_IF)?;
            iface(&rtnl, GEN_IF)
        })??;
        let rcv_if = rcv.try_run(|| -> Result<Iface> {
            let rtnl = Rtnl::connect(rcv.name())?;
            rtnl.set_mac(RCV_IF, RCV_MAC)?;
            rtnl.add_ipv4(RCV_IF, RCV_ADDR, WAN_PREFIX_LEN)?;
            rtnl.set_up("lo")?;
            rtnl.set_up(RCV_IF)?;
            iface(&rtnl, RCV_IF)
        })??;
        let (lan_if, wan_if) = gw.try_run(|| -> Result<(Iface, Iface)> {
            let rtnl = Rtnl::connect(gw.name())?;
            let wan = iface(&rtnl, GW_WAN_IF)?;
            rtnl.add_neighbour(wan.ifindex, RCV_ADDR, rcv_if.mac)?;
            Ok((iface(&rtnl, GW_LAN_IF)?, wan))
        })??;
        Ok(Bench {
            gen,
            gw,
            rcv,
            gen_if,
            lan_if,
            wan_if,
            rcv_if,
        })
    }

    /// Where the generator sends from in `direction`.
    pub fn sender(&self, direction: Direction) -> End<'_> {
        match direction {
            Direction::LanToWan => End {
                ns: &self.gen,
                iface: &self.gen_if,
                name: GEN_IF,
            },
            Direction::WanToLan => End {
                ns: &self.rcv,
                iface: &self.rcv_if,
                name: RCV_IF,
            },
        }
    }

    /// Where the receiver counts in `direction`.
    pub fn receiver(&self, direction: Direction) -> End<'_> {
        match direction {
            Direction::LanToWan => self.sender(Direction::WanToLan),
            Direction::WanToLan => self.sender(Direction::LanToWan),
        }
    }

    /// The gateway's veth the traffic of `direction` enters by.
    pub fn ingress(&self, direction: Direction) -> End<'_> {
        match direction {
            Direction::LanToWan => End {
                ns: &self.gw,
                iface: &self.lan_if,
                name: GW_LAN_IF,
            },
            Direction::WanToLan => End {
                ns: &self.gw,
                iface: &self.wan_if,
                name: GW_WAN_IF,
            },
        }
    }

    /// Permanent neighbour entries on `blan0` for `addrs`, all at the generator's MAC
    /// address: the WAN → LAN traffic's internal hosts exist only as the generator's
    /// sources, so nobody would answer the gateway's ARP requests for them.
    pub fn add_lan_neighbours(&self, addrs: impl IntoIterator<Item = Ipv4Addr>) -> Result<()> {
        let addrs: Vec<Ipv4Addr> = addrs.into_iter().collect();
        let lan = self.lan_if.ifindex;
        self.gw.try_run(|| -> Result<()> {
            let rtnl = Rtnl::connect(self.gw.name())?;
            for &addr in &addrs {
                rtnl.add_neighbour(lan, addr, GEN_MAC)?;
            }
            Ok(())
        })?
    }

    /// Switches `ifname` in `ns` to threaded NAPI and returns the thread ids of its NAPI
    /// threads. The veth must already run XDP (that is what gives it NAPI instances).
    pub fn thread_napi(ns: &Netns, ifname: &str) -> Result<Vec<i32>> {
        let prefix = format!("napi/{ifname}-");
        let before = napi_threads(&prefix);
        ns.try_run(|| write_sysfs_here(&format!("class/net/{ifname}/threaded"), "1"))?
            .with_context(|| format!("enabling threaded NAPI on {ifname} in {}", ns.name()))?;
        let after = napi_threads(&prefix);
        let new: Vec<i32> = after.difference(&before).copied().collect();
        if new.is_empty() {
            bail!(
                "threaded NAPI on {ifname} in {}: no new `{prefix}*` kernel thread appeared",
                ns.name()
            );
        }
        Ok(new)
    }

    /// The id of the XDP program attached to `ifname` in `ns`, if any.
    pub fn xdp_prog_id(ns: &Netns, ifname: &str) -> Result<Option<u32>> {
        Ok(ns.try_run(|| Rtnl::connect(ns.name())?.xdp_prog_id(ifname))??)
    }
}

/// Kernel threads whose name starts with `prefix`.
fn napi_threads(prefix: &str) -> BTreeSet<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end().starts_with(prefix))
        })
        .collect()
}

/// Writes below `/sys` as the calling thread's network namespace sees it. sysfs shows
/// the namespace of whoever mounted it, so the thread takes a private mount namespace
/// and mounts a sysfs of its own there; both vanish with the thread.
fn write_sysfs_here(path: &str, value: &str) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNS).context("unsharing a mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the private mount namespace a slave")?;
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("mounting this namespace's sysfs")?;
    std::fs::write(format!("/sys/{path}"), value)
        .with_context(|| format!("writing {value} to /sys/{path}"))
}

/// Interface index and MAC address of `name`, in the calling thread's namespace.
fn iface(rtnl: &Rtnl, name: &str) -> Result<Iface> {
    Ok(Iface {
        ifindex: rtnl.link_index(name)?,
        mac: rtnl.mac(name)?,
    })
}
