//! The embedded eBPF object: loading it with the NAT tables sized and its maps
//! pinned (or adopted from the pins of a previous natgw), loading its programs, and
//! attaching them — `xdp_lan` and `tc_lan_ingress` to every LAN interface, `xdp_wan`
//! to the WAN, `tc_wan_ingress`/`tc_wan_egress` to the WAN's TC hooks, `tc_lo_egress`
//! to `lo` — and detaching them.
//!
//! Attachments are bpf links pinned next to the maps, so the data path outlives the
//! controller (a crash, a stop, an upgrade). A new natgw finds the pinned link of
//! each attachment and replaces its program in place (`BPF_LINK_UPDATE`): no
//! instant passes without a program on the hook.
//!
//! Every failure is turned into a sentence naming the program and interface; kernel
//! refusals are explained (privileges, no BPF support, verifier rejection).

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{self, SchedClassifierLink, TcError};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::util::KernelVersion;
use aya::{Ebpf, EbpfError, EbpfLoader};
use natgw_common::maps::names;

use crate::config::XdpModeChoice;
use crate::datapath::maps::chain;

/// natgw's eBPF object, embedded by the build script (empty when built without it).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/natgw-ebpf.o"));

/// Program names in the object.
pub mod programs {
    /// XDP on every LAN interface: outbound translation.
    pub const XDP_LAN: &str = "xdp_lan";
    /// XDP on the WAN: inbound translation.
    pub const XDP_WAN: &str = "xdp_wan";
    /// TC on WAN ingress: inbound packets XDP left to the kernel.
    pub const TC_WAN_INGRESS: &str = "tc_wan_ingress";
    /// TC on WAN egress: outbound packets the kernel forwarded.
    pub const TC_WAN_EGRESS: &str = "tc_wan_egress";
    /// TC on every LAN interface's ingress: hairpinning.
    pub const TC_LAN_INGRESS: &str = "tc_lan_ingress";
    /// TC on `lo`'s egress: the gateway's services answering hairpinned hosts.
    pub const TC_LO_EGRESS: &str = "tc_lo_egress";
    /// All XDP programs.
    pub const XDP: [&str; 2] = [XDP_LAN, XDP_WAN];
    /// All TC programs.
    pub const TC: [&str; 4] = [TC_WAN_INGRESS, TC_WAN_EGRESS, TC_LAN_INGRESS, TC_LO_EGRESS];
}

/// Loading or attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Built without the eBPF object.
    #[error(
        "this natgw binary was built without its eBPF programs; build it with `cargo xtask build`"
    )]
    NoObject,
    /// The object could not be loaded (maps created, relocations applied).
    #[error("loading the eBPF object failed: {}", explain(.0))]
    Object(#[source] EbpfError),
    /// A program natgw needs is missing from the object.
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The kernel refused a program.
    #[error("loading eBPF program {name} failed: {}", explain(.source))]
    Program {
        /// Program.
        name: &'static str,
        /// Cause.
        #[source]
        source: ProgramError,
    },
    /// Attaching failed.
    #[error("attaching {program} to {iface}{mode} failed: {detail}")]
    Attach {
        /// Program.
        program: &'static str,
        /// Interface.
        iface: String,
        /// ` in driver mode` etc.
        mode: String,
        /// Explained cause.
        detail: String,
    },
    /// Adding the clsact qdisc failed.
    #[error("adding the clsact qdisc to {iface} failed: {}", explain(.source))]
    Clsact {
        /// Interface.
        iface: String,
        /// Cause.
        #[source]
        source: TcError,
    },
}

/// The first OS error code in an error chain.
fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        if let Some(ProgramError::SyscallError(s)) = err.downcast_ref::<ProgramError>() {
            if let Some(code) = s.io_error.raw_os_error() {
                return Some(code);
            }
        }
        cur = err.source();
    }
    None
}

/// A kernel refusal as a sentence.
fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(ProgramError::LoadError {
        io_error,
        verifier_log,
    }) = e.downcast_ref::<ProgramError>()
    {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
        return match io_error.raw_os_error() {
            Some(libc::EPERM) => {
                "permission denied (natgw needs root, or CAP_BPF and CAP_NET_ADMIN)".to_owned()
            }
            Some(libc::ENOSYS) => "this kernel has no BPF support (CONFIG_BPF_SYSCALL)".to_owned(),
            _ if tail.is_empty() => format!("the kernel refused it ({io_error})"),
            _ => format!("the kernel's verifier rejected it ({io_error}): {tail}"),
        };
    }
    match errno_of(e) {
        Some(libc::EPERM | libc::EACCES) => format!(
            "permission denied (natgw needs root, or CAP_BPF and CAP_NET_ADMIN): {}",
            chain(e)
        ),
        Some(libc::ENOSYS) => {
            "this kernel has no BPF support (it was built without CONFIG_BPF_SYSCALL)".to_owned()
        }
        Some(libc::EBUSY | libc::EEXIST) => format!(
            "another program is already attached there (see `bpftool net show`): {}",
            chain(e)
        ),
        Some(libc::EOPNOTSUPP) => format!("not supported by this driver: {}", chain(e)),
        _ => chain(e),
    }
}

/// Loads the object with its tables sized as [`capacity`] says, every map of
/// [`names::PINNED`] pinned under `pin_dir` — adopted when a pin is already there
/// (the caller has checked its layout, see `datapath::layout`), created and pinned
/// otherwise —, starts forwarding its log records (before the programs load, see
/// [`crate::datapath::logging`]) and loads all programs into the kernel.
pub fn load(
    max_mappings: u32,
    max_held_ports: u32,
    pin_dir: &Path,
) -> Result<(Ebpf, Option<tokio::task::JoinHandle<()>>), LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::NAT_FWD, max_mappings)
        .map_max_entries(names::NAT_FWD, max_mappings);
    for name in SIZED_AT_LOAD {
        if let Some(n) = capacity(name, max_mappings, max_held_ports) {
            loader.map_max_entries(name, n);
        }
    }
    for name in names::PINNED {
        loader.map_pin_path(name, pin_dir.join(name));
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
    let log_task = crate::datapath::logging::forward_ebpf_logs(&mut ebpf);
    load_programs(&mut ebpf)?;
    Ok((ebpf, log_task))
}

/// Loads every program natgw attaches, one thread each: the kernel verifies each
/// program in the loading thread, and verification is most of a start's time, so
/// the programs are verified side by side on as many CPUs as there are.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    for name in programs::XDP.iter().chain(&programs::TC) {
        if ebpf.program(name).is_none() {
            return Err(LoadError::MissingProgram(name));
        }
    }
    let wanted: Vec<(&str, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter(|(name, _)| programs::XDP.contains(name) || programs::TC.contains(name))
        .collect();
    std::thread::scope(|scope| {
        let loads: Vec<_> = wanted
            .into_iter()
            .map(|(name, prog)| {
                scope.spawn(move || {
                    let started = std::time::Instant::now();
                    let result = match prog {
                        aya::programs::Program::Xdp(p) => p.load(),
                        aya::programs::Program::SchedClassifier(p) => p.load(),
                        _ => Ok(()),
                    };
                    (name, result, started.elapsed())
                })
            })
            .collect();
        for load in loads {
            // A panic while loading is a bug: it goes on as one.
            let (name, result, took) = load
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let name = programs::XDP
                .iter()
                .chain(&programs::TC)
                .find(|n| **n == name)
                .copied()
                .unwrap_or("?");
            result.map_err(|source| LoadError::Program { name, source })?;
            log::debug!(
                "program.loaded name={name} seconds={:.2}",
                took.as_secs_f64()
            );
        }
        Ok(())
    })
}

/// The maps whose capacity follows the configuration (see [`capacity`]): a
/// different capacity in pinned maps is a setting that cannot change without
/// recreating the tables, not a different layout.
pub const SIZED_AT_LOAD: [&str; 5] = [
    names::NAT_FWD,
    names::NAT_REV,
    names::NAT_SESSIONS,
    names::HOST_STATE,
    names::HOST_RELEASED,
];

/// The capacity the loader gives map `name` (`None`: the object's own): both NAT
/// tables `max_mappings`, the reverse one with room for `max_held_ports` holds of
/// freed ports besides (RFC 6888 REQ-8); the session table twice that (a TCP
/// mapping has at least one session, an address-dependent one two: the address
/// record and the endpoint); the per-host records `max_mappings` too (every host
/// with a record holds a mapping, or did recently; they allocate entries as they go,
/// so the bound costs nothing).
#[must_use]
pub fn capacity(name: &str, max_mappings: u32, max_held_ports: u32) -> Option<u32> {
    match name {
        names::NAT_FWD | names::HOST_STATE | names::HOST_RELEASED => Some(max_mappings),
        names::NAT_REV => Some(max_mappings.saturating_add(max_held_ports)),
        names::NAT_SESSIONS => Some(max_mappings.saturating_mul(2)),
        _ => None,
    }
}

/// Whether attachments can be pinned bpf links that outlive natgw and are replaced
/// atomically: XDP links (Linux 5.9) and tcx links (Linux 6.6). Older kernels get
/// netlink attachments that natgw detaches when it stops.
#[must_use]
pub fn links_outlive_natgw() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// The pin of the link of `program` on interface `ifindex`.
#[must_use]
pub fn link_pin(pin_dir: &Path, program: &str, ifindex: u32) -> PathBuf {
    pin_dir.join(format!("{LINK_PIN_PREFIX}{program}@{ifindex}"))
}

/// Names of link pins start with this (map pins are upper case).
pub const LINK_PIN_PREFIX: &str = "link-";

/// How natgw holds an attachment.
#[derive(Debug)]
enum Held<L> {
    /// A bpf link pinned at `pin`: it outlives natgw. Removing the pin and closing
    /// the descriptor detaches it.
    Pinned { link: FdLink, pin: PathBuf },
    /// An attachment natgw detaches when it stops (kernels without tcx).
    Owned(L),
}

impl<L: aya::programs::Link> Held<L> {
    /// Detaches: the pin goes, and with natgw's descriptor the link.
    fn detach(self) -> Result<(), String> {
        match self {
            Self::Pinned { link, pin } => {
                match std::fs::remove_file(&pin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("removing {}: {e}", pin.display())),
                }
                drop(link);
                Ok(())
            }
            Self::Owned(link) => link.detach().map_err(|e| explain(&e)),
        }
    }

    const fn pinned(&self) -> bool {
        matches!(self, Self::Pinned { .. })
    }
}

/// Pins `link` at `pin` (any stale pin there goes first).
fn pin_link(link: FdLink, pin: &Path) -> Result<FdLink, String> {
    let _ = std::fs::remove_file(pin);
    let pinned = link
        .pin(pin)
        .map_err(|e| format!("pinning the link at {}: {e}", pin.display()))?;
    Ok(FdLink::from(pinned))
}

/// The link pinned at `pin`, if there is one.
fn pinned_link(pin: &Path) -> Option<FdLink> {
    PinnedLink::from_pin(pin).ok().map(FdLink::from)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Program { name, source })
}

/// How an XDP program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native (driver) mode.
    Driver,
    /// Generic (SKB) mode.
    Skb,
}

impl AttachedMode {
    /// `driver` or `skb`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Driver => "driver",
            Self::Skb => "skb",
        }
    }

    const fn aya(self) -> XdpMode {
        match self {
            Self::Driver => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
        }
    }
}

/// An attached XDP program. Pinned, it stays attached when natgw exits; see
/// [`XdpAttachment::detach`].
#[derive(Debug)]
pub struct XdpAttachment {
    /// Program.
    pub program: &'static str,
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Mode it runs in.
    pub mode: AttachedMode,
    /// It replaced the program of a previous natgw in place.
    pub replaced: bool,
    link: Held<XdpLink>,
}

impl XdpAttachment {
    /// Detaches the program.
    pub fn detach(self) -> Result<(), String> {
        self.link.detach()
    }

    /// Whether it outlives natgw.
    #[must_use]
    pub const fn pinned(&self) -> bool {
        self.link.pinned()
    }
}

/// Attaches XDP program `program` to `iface`: when `pin` holds the link of a
/// previous natgw, by replacing that link's program atomically (it keeps its mode,
/// `current`); otherwise a new link in the mode `choice` asks for (`auto`: driver
/// mode, else generic mode with a warning), pinned at `pin` when given.
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    program_name: &'static str,
    iface: &str,
    ifindex: u32,
    choice: XdpModeChoice,
    pin: Option<&Path>,
    current: Option<AttachedMode>,
) -> Result<XdpAttachment, LoadError> {
    let prog: &mut Xdp = program(ebpf, program_name)?;
    let attach_err = |mode: &str, detail: String| LoadError::Attach {
        program: program_name,
        iface: iface.to_owned(),
        mode: mode.to_owned(),
        detail,
    };
    if let Some((pin, old)) = pin.and_then(|p| pinned_link(p).map(|l| (p, l))) {
        let replaced = XdpLink::try_from(old)
            .map_err(|e| e.to_string())
            .and_then(|old| prog.attach_to_link(old).map_err(|e| explain(&e)))
            .and_then(|id| prog.take_link(id).map_err(|e| explain(&e)))
            .and_then(|l| FdLink::try_from(l).map_err(|e| e.to_string()));
        match replaced {
            Ok(link) => {
                return Ok(XdpAttachment {
                    program: program_name,
                    iface: iface.to_owned(),
                    ifindex,
                    mode: current.unwrap_or(AttachedMode::Driver),
                    replaced: true,
                    link: Held::Pinned {
                        link,
                        pin: pin.to_owned(),
                    },
                });
            }
            Err(e) => {
                // A link whose device went away (defunct): a new one replaces it.
                log::warn!(
                    "xdp.stale_link iface={iface} program={program_name} error=\"{e}\": \
                     attaching anew"
                );
                let _ = std::fs::remove_file(pin);
            }
        }
    }
    let try_mode = |prog: &mut Xdp, mode: AttachedMode| -> Result<XdpLink, String> {
        let id = prog
            .attach_to_if_index(ifindex, mode.aya())
            .map_err(|e| explain(&e))?;
        prog.take_link(id).map_err(|e| explain(&e))
    };
    let (link, mode) = match choice {
        XdpModeChoice::Native => (
            try_mode(prog, AttachedMode::Driver).map_err(|d| attach_err(" in native mode", d))?,
            AttachedMode::Driver,
        ),
        XdpModeChoice::Skb => (
            try_mode(prog, AttachedMode::Skb).map_err(|d| attach_err(" in skb mode", d))?,
            AttachedMode::Skb,
        ),
        XdpModeChoice::Auto => match try_mode(prog, AttachedMode::Driver) {
            Ok(link) => (link, AttachedMode::Driver),
            Err(native) => {
                log::warn!(
                    "xdp.fallback iface={iface} program={program_name} mode=skb \
                     reason=\"native mode failed: {native}\": generic XDP is slower"
                );
                let link = try_mode(prog, AttachedMode::Skb).map_err(|skb| {
                    attach_err("", format!("native mode: {native}; skb mode: {skb}"))
                })?;
                (link, AttachedMode::Skb)
            }
        },
    };
    let link = match pin {
        Some(pin) => {
            let fd = FdLink::try_from(link).map_err(|e| attach_err("", e.to_string()))?;
            Held::Pinned {
                link: pin_link(fd, pin).map_err(|e| attach_err("", e))?,
                pin: pin.to_owned(),
            }
        }
        None => Held::Owned(link),
    };
    Ok(XdpAttachment {
        program: program_name,
        iface: iface.to_owned(),
        ifindex,
        mode,
        replaced: false,
        link,
    })
}

/// An attached TC program. Pinned, it stays attached when natgw exits.
#[derive(Debug)]
pub struct TcAttachment {
    /// Program.
    pub program: &'static str,
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// `ingress` or `egress`.
    pub hook: &'static str,
    /// It replaced the program of a previous natgw in place.
    pub replaced: bool,
    link: Held<SchedClassifierLink>,
}

impl TcAttachment {
    /// Detaches the program.
    pub fn detach(self) -> Result<(), String> {
        self.link.detach()
    }

    /// Whether it outlives natgw.
    #[must_use]
    pub const fn pinned(&self) -> bool {
        self.link.pinned()
    }
}

/// Adds the `clsact` qdisc to `iface`. Returns whether natgw created it (`false` when
/// it was already there).
pub fn add_clsact(iface: &str) -> Result<bool, LoadError> {
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => Ok(true),
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(false),
        Err(source) => Err(LoadError::Clsact {
            iface: iface.to_owned(),
            source,
        }),
    }
}

/// Attaches TC program `program_name` to `iface`'s `hook`: when `pin` holds the
/// link of a previous natgw, by replacing that link's program atomically;
/// otherwise a new tcx link (Linux 6.6+), pinned at `pin` when given. Older kernels
/// get a `cls_bpf` filter on the clsact qdisc (`pin` must then be `None`).
pub fn attach_tc(
    ebpf: &mut Ebpf,
    program_name: &'static str,
    iface: &str,
    ifindex: u32,
    hook: TcAttachType,
    pin: Option<&Path>,
) -> Result<TcAttachment, LoadError> {
    let hook_name = match hook {
        TcAttachType::Ingress => "ingress",
        TcAttachType::Egress => "egress",
        TcAttachType::Custom(_) => "custom",
    };
    let err = |detail: String| LoadError::Attach {
        program: program_name,
        iface: iface.to_owned(),
        mode: format!(" ({hook_name})"),
        detail,
    };
    let prog: &mut SchedClassifier = program(ebpf, program_name)?;
    if let Some((pin, old)) = pin.and_then(|p| pinned_link(p).map(|l| (p, l))) {
        let replaced = SchedClassifierLink::try_from(old)
            .map_err(|e| e.to_string())
            .and_then(|old| prog.attach_to_link(old).map_err(|e| explain(&e)))
            .and_then(|id| prog.take_link(id).map_err(|e| explain(&e)))
            .and_then(|l| FdLink::try_from(l).map_err(|e| e.to_string()));
        match replaced {
            Ok(link) => {
                return Ok(TcAttachment {
                    program: program_name,
                    iface: iface.to_owned(),
                    ifindex,
                    hook: hook_name,
                    replaced: true,
                    link: Held::Pinned {
                        link,
                        pin: pin.to_owned(),
                    },
                });
            }
            Err(e) => {
                log::warn!(
                    "tc.stale_link iface={iface} program={program_name} error=\"{e}\": \
                     attaching anew"
                );
                let _ = std::fs::remove_file(pin);
            }
        }
    }
    let id = prog.attach(iface, hook).map_err(|e| err(explain(&e)))?;
    let link = prog.take_link(id).map_err(|e| err(explain(&e)))?;
    let link = match pin {
        Some(pin) => {
            let fd = FdLink::try_from(link).map_err(|e| err(e.to_string()))?;
            Held::Pinned {
                link: pin_link(fd, pin).map_err(err)?,
                pin: pin.to_owned(),
            }
        }
        None => Held::Owned(link),
    };
    Ok(TcAttachment {
        program: program_name,
        iface: iface.to_owned(),
        ifindex,
        hook: hook_name,
        replaced: false,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_refusals_become_sentences() {
        let eperm = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(
            explain(&eperm).starts_with("permission denied"),
            "{}",
            explain(&eperm)
        );
        let busy = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: io::Error::from_raw_os_error(libc::EBUSY),
        });
        assert!(explain(&busy).contains("already attached"));
        let enosys = io::Error::from_raw_os_error(libc::ENOSYS);
        assert!(explain(&enosys).contains("no BPF support"));
    }

    #[test]
    fn missing_object_message_says_how_to_build() {
        assert_eq!(
            LoadError::NoObject.to_string(),
            "this natgw binary was built without its eBPF programs; build it with \
             `cargo xtask build`"
        );
    }
}
