//! The embedded eBPF object: loading it with the NAT tables sized, loading its
//! programs, and attaching them — `xdp_lan` and `tc_lan_ingress` to every LAN
//! interface, `xdp_wan` to the WAN, `tc_wan_ingress`/`tc_wan_egress` to the WAN's TC
//! hooks — and detaching them.
//!
//! Every failure is turned into a sentence naming the program and interface; kernel
//! refusals are explained (privileges, no BPF support, verifier rejection).

use std::io;

use aya::programs::tc::{self, SchedClassifierLink, TcError};
use aya::programs::xdp::XdpLink;
use aya::programs::{Link as _, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode};
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

/// Loads the object with both NAT tables sized to `max_mappings` (the reverse one
/// with room for `max_held_ports` holds of freed ports besides, RFC 6888 REQ-8) and
/// the session table to twice that (a TCP mapping has at least one session, an
/// address-dependent one two: the address record and the endpoint), the per-host
/// records to `max_mappings` too (every host with a record holds a mapping, or did
/// recently; they allocate entries as they go, so the bound costs nothing), starts
/// forwarding its log records (before the programs load, see
/// [`crate::datapath::logging`]) and loads all four programs into the kernel.
pub fn load(
    max_mappings: u32,
    max_held_ports: u32,
) -> Result<(Ebpf, Option<tokio::task::JoinHandle<()>>), LoadError> {
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::NAT_FWD, max_mappings)
        .map_max_entries(names::NAT_REV, max_mappings.saturating_add(max_held_ports))
        .map_max_entries(names::NAT_SESSIONS, max_mappings.saturating_mul(2))
        .map_max_entries(names::HOST_STATE, max_mappings)
        .map_max_entries(names::HOST_RELEASED, max_mappings)
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let log_task = crate::datapath::logging::forward_ebpf_logs(&mut ebpf);
    for name in programs::XDP {
        let prog: &mut Xdp = program(&mut ebpf, name)?;
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    for name in programs::TC {
        let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
        prog.load()
            .map_err(|source| LoadError::Program { name, source })?;
    }
    Ok((ebpf, log_task))
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

/// An attached XDP program; dropping it detaches it.
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
    link: XdpLink,
}

impl XdpAttachment {
    /// Detaches the program.
    pub fn detach(self) -> Result<(), String> {
        self.link.detach().map_err(|e| explain(&e))
    }
}

/// Attaches XDP program `program` to `iface` in the mode `choice` asks for (`auto`:
/// driver mode, else generic mode with a warning).
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    program_name: &'static str,
    iface: &str,
    ifindex: u32,
    choice: XdpModeChoice,
) -> Result<XdpAttachment, LoadError> {
    let prog: &mut Xdp = program(ebpf, program_name)?;
    let try_mode = |prog: &mut Xdp, mode: AttachedMode| -> Result<XdpLink, String> {
        let id = prog
            .attach_to_if_index(ifindex, mode.aya())
            .map_err(|e| explain(&e))?;
        prog.take_link(id).map_err(|e| explain(&e))
    };
    let attach_err = |mode: &str, detail: String| LoadError::Attach {
        program: program_name,
        iface: iface.to_owned(),
        mode: mode.to_owned(),
        detail,
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
    Ok(XdpAttachment {
        program: program_name,
        iface: iface.to_owned(),
        ifindex,
        mode,
        link,
    })
}

/// An attached TC program; dropping it detaches it.
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
    link: SchedClassifierLink,
}

impl TcAttachment {
    /// Detaches the program.
    pub fn detach(self) -> Result<(), String> {
        self.link.detach().map_err(|e| explain(&e))
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

/// Attaches TC program `program_name` to `iface`'s `hook`. On Linux 6.6+ aya uses a
/// tcx link; older kernels get a `cls_bpf` filter on the clsact qdisc.
pub fn attach_tc(
    ebpf: &mut Ebpf,
    program_name: &'static str,
    iface: &str,
    ifindex: u32,
    hook: TcAttachType,
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
    let id = prog.attach(iface, hook).map_err(|e| err(explain(&e)))?;
    let link = prog.take_link(id).map_err(|e| err(explain(&e)))?;
    Ok(TcAttachment {
        program: program_name,
        iface: iface.to_owned(),
        ifindex,
        hook: hook_name,
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
