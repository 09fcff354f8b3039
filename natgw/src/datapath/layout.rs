//! What the pinned maps are, so that a restarted or upgraded natgw can tell whether
//! it may adopt them: the definition of each map (type, key and value sizes,
//! capacity, flags) as the kernel reports it for the pins and as natgw's own eBPF
//! object declares it, plus [`LAYOUT_VERSION`] for what sizes cannot show.
//!
//! The record ([`LayoutRecord`]) is written to the runtime directory when natgw
//! creates the maps, with the network namespace's cookie: inode numbers of network
//! namespaces are reused, cookies never are within a boot, so pins left by a
//! namespace that no longer exists are told apart from this namespace's own.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd as _;

use aya::maps::MapInfo;
use natgw_common::maps::{names, LAYOUT_VERSION};
use serde::{Deserialize, Serialize};

use crate::datapath::dirs::{RuntimeDirs, StateError};
use crate::datapath::loader::SIZED_AT_LOAD;

/// One map's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSpec {
    /// Map name.
    pub name: String,
    /// `bpf_map_type`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags`.
    pub flags: u32,
}

impl fmt::Display for MapSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (type {}, key {} B, value {} B, {} entries, flags {:#x})",
            self.name, self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// The maps natgw pins, as one layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// [`LAYOUT_VERSION`] of the natgw that made them.
    pub version: u32,
    /// The pinned maps, in [`names::PINNED`] order.
    pub maps: Vec<MapSpec>,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layout {}", self.version)
    }
}

/// What the runtime directory records about the pinned maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutRecord {
    /// The layout.
    pub layout: Layout,
    /// Version of the natgw that created the maps.
    pub natgw_version: String,
    /// Cookie of the network namespace they were made in.
    pub netns_cookie: u64,
}

/// Why pinned maps cannot be adopted.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The embedded object does not parse.
    #[error("natgw's eBPF object cannot be read: {0}")]
    Object(String),
    /// A pinned map cannot be inspected.
    #[error("inspecting the pinned map {}: {source}", .path.display())]
    Pin {
        /// The pin.
        path: std::path::PathBuf,
        /// Cause.
        source: aya::maps::MapError,
    },
    /// The pinned maps are of another layout: the sentence names both, each
    /// difference, and what to do.
    #[error("{0}")]
    Changed(String),
}

impl Layout {
    /// The layout natgw's eBPF object `object` declares, with the tables sized for
    /// `max_mappings` and `max_held_ports` as the loader sizes them
    /// ([`loader::capacity`](crate::datapath::loader::capacity)).
    ///
    /// # Errors
    /// When the object does not parse or lacks a pinned map.
    pub fn of_object(
        object: &[u8],
        max_mappings: u32,
        max_held_ports: u32,
    ) -> Result<Self, LayoutError> {
        let obj = aya_obj::Object::parse(object).map_err(|e| LayoutError::Object(e.to_string()))?;
        let maps = names::PINNED
            .iter()
            .map(|&name| {
                let m = obj
                    .maps
                    .get(name)
                    .ok_or_else(|| LayoutError::Object(format!("it has no map {name}")))?;
                let max_entries =
                    crate::datapath::loader::capacity(name, max_mappings, max_held_ports)
                        .unwrap_or_else(|| m.max_entries());
                Ok(MapSpec {
                    name: name.to_owned(),
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries,
                    flags: m.map_flags(),
                })
            })
            .collect::<Result<_, LayoutError>>()?;
        Ok(Self {
            version: LAYOUT_VERSION,
            maps,
        })
    }

    /// The definitions of the maps pinned in `dirs` as the kernel reports them
    /// (those of [`names::PINNED`] that are pinned), under `version`.
    ///
    /// # Errors
    /// When a pin exists but cannot be inspected.
    pub fn of_pins(dirs: &RuntimeDirs, version: u32) -> Result<Self, LayoutError> {
        let mut maps = Vec::new();
        for name in names::PINNED {
            let path = dirs.pin_path(name);
            if !path.exists() {
                continue;
            }
            let pin_err = |source| LayoutError::Pin {
                path: path.clone(),
                source,
            };
            let info = MapInfo::from_pin(&path).map_err(pin_err)?;
            maps.push(MapSpec {
                name: name.to_owned(),
                map_type: info.map_type().map_err(pin_err)? as u32,
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
                flags: info.map_flags(),
            });
        }
        Ok(Self { version, maps })
    }
}

/// What adopting the pinned maps means, when they may be adopted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    /// Maps that keep the capacity they were created with instead of the
    /// configured one (`--max-mappings` changed).
    pub capacity_kept: Vec<(String, u32, u32)>,
    /// Maps this natgw has that the pins lack (created new).
    pub new_maps: Vec<String>,
}

/// Whether `ours` may adopt the maps of `record` whose kernel definitions are
/// `pinned`.
///
/// # Errors
/// [`LayoutError::Changed`] naming both layouts and each difference.
pub fn check(
    ours: &Layout,
    record: &LayoutRecord,
    pinned: &Layout,
    dirs: &RuntimeDirs,
) -> Result<Adoption, LayoutError> {
    let mut differences = Vec::new();
    let mut adoption = Adoption::default();
    if record.layout.version != ours.version {
        differences.push(format!(
            "layout version {} vs {}",
            record.layout.version, ours.version
        ));
    }
    for mine in &ours.maps {
        let Some(theirs) = pinned.maps.iter().find(|m| m.name == mine.name) else {
            adoption.new_maps.push(mine.name.clone());
            continue;
        };
        let same_shape = theirs.map_type == mine.map_type
            && theirs.key_size == mine.key_size
            && theirs.value_size == mine.value_size
            && theirs.flags == mine.flags;
        if !same_shape {
            differences.push(format!("{theirs} vs {mine}"));
        } else if theirs.max_entries != mine.max_entries {
            if SIZED_AT_LOAD.contains(&mine.name.as_str()) {
                adoption.capacity_kept.push((
                    mine.name.clone(),
                    theirs.max_entries,
                    mine.max_entries,
                ));
            } else {
                differences.push(format!("{theirs} vs {mine}"));
            }
        }
    }
    if differences.is_empty() {
        return Ok(adoption);
    }
    Err(LayoutError::Changed(format!(
        "the pinned maps in {} were made by natgw {} with {}; this natgw {} uses {}; they \
         differ in: {}. Keep running natgw {}, or remove the maps with `natgw stop --flush` \
         (every mapping is lost) and start this one",
        dirs.pin_dir.display(),
        record.natgw_version,
        record.layout,
        env!("CARGO_PKG_VERSION"),
        ours,
        differences.join("; "),
        record.natgw_version,
    )))
}

/// The cookie of the current network namespace (`SO_NETNS_COOKIE`, Linux 5.14+):
/// unique for the boot, unlike the namespace's inode number.
///
/// # Errors
/// When no socket can be opened or the kernel lacks the option.
pub fn netns_cookie() -> io::Result<u64> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .or_else(|_| std::net::UdpSocket::bind("0.0.0.0:0"))?;
    let mut cookie: u64 = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<u64>()).unwrap_or(8);
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::addr_of_mut!(cookie).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(io::Error::last_os_error())
    }
}

impl RuntimeDirs {
    /// Reads the layout record; `None` when there is none or it does not parse.
    #[must_use]
    pub fn read_layout(&self) -> Option<LayoutRecord> {
        self.read_record(LAYOUT_FILE).ok().flatten()
    }

    /// Writes the layout record.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_layout(&self, record: &LayoutRecord) -> Result<(), StateError> {
        self.write_record(LAYOUT_FILE, record)
    }

    /// Removes the layout record.
    ///
    /// # Errors
    /// When it exists and cannot be removed.
    pub fn remove_layout(&self) -> Result<(), StateError> {
        self.remove_record(LAYOUT_FILE)
    }

    /// The layout record's path.
    #[must_use]
    pub fn layout_file(&self) -> std::path::PathBuf {
        self.state_dir.join(LAYOUT_FILE)
    }
}

const LAYOUT_FILE: &str = "layout.json";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(name: &str, value_size: u32, max_entries: u32) -> MapSpec {
        MapSpec {
            name: name.to_owned(),
            map_type: 1,
            key_size: 16,
            value_size,
            max_entries,
            flags: 0,
        }
    }

    fn record(layout: Layout) -> LayoutRecord {
        LayoutRecord {
            layout,
            natgw_version: "0.0.1".to_owned(),
            netns_cookie: 1,
        }
    }

    fn dirs() -> RuntimeDirs {
        RuntimeDirs::new(Path::new("/sys/fs/bpf/natgw"), Path::new("/run/natgw"), 7)
    }

    #[test]
    fn same_layout_is_adopted_and_a_new_capacity_is_only_noted() {
        let ours = Layout {
            version: 3,
            maps: vec![spec("NAT_FWD", 32, 2000), spec("CONFIG", 48, 1)],
        };
        let pinned = Layout {
            version: 3,
            maps: vec![spec("NAT_FWD", 32, 1000)],
        };
        let adoption = check(&ours, &record(pinned.clone()), &pinned, &dirs()).unwrap();
        assert_eq!(
            adoption.capacity_kept,
            vec![("NAT_FWD".to_owned(), 1000, 2000)]
        );
        assert_eq!(adoption.new_maps, vec!["CONFIG".to_owned()]);
    }

    #[test]
    fn a_changed_value_or_version_is_refused_naming_both() {
        let ours = Layout {
            version: 3,
            maps: vec![spec("NAT_FWD", 32, 1000), spec("CONFIG", 48, 1)],
        };
        let pinned = Layout {
            version: 2,
            maps: vec![spec("NAT_FWD", 24, 1000), spec("CONFIG", 48, 1)],
        };
        let err = check(&ours, &record(pinned.clone()), &pinned, &dirs())
            .unwrap_err()
            .to_string();
        assert!(err.contains("natgw 0.0.1 with layout 2"), "{err}");
        assert!(err.contains("uses layout 3"), "{err}");
        assert!(err.contains("layout version 2 vs 3"), "{err}");
        assert!(
            err.contains("NAT_FWD (type 1, key 16 B, value 24 B, 1000 entries, flags 0x0) vs NAT_FWD (type 1, key 16 B, value 32 B"),
            "{err}"
        );
        assert!(!err.contains("CONFIG"), "{err}");
        assert!(err.contains("natgw stop --flush"), "{err}");
    }

    #[test]
    fn a_fixed_map_of_another_capacity_is_a_different_layout() {
        let ours = Layout {
            version: 1,
            maps: vec![spec("COUNTERS", 8, 128)],
        };
        let pinned = Layout {
            version: 1,
            maps: vec![spec("COUNTERS", 8, 64)],
        };
        assert!(check(&ours, &record(pinned.clone()), &pinned, &dirs()).is_err());
    }

    #[test]
    fn the_embedded_object_declares_every_pinned_map() {
        if crate::datapath::loader::EBPF_OBJECT.is_empty() {
            return; // built without the eBPF object (plain `cargo test`)
        }
        let layout = Layout::of_object(crate::datapath::loader::EBPF_OBJECT, 4096, 2048).unwrap();
        assert_eq!(layout.maps.len(), names::PINNED.len());
        let fwd = layout
            .maps
            .iter()
            .find(|m| m.name == names::NAT_FWD)
            .unwrap();
        assert_eq!(fwd.max_entries, 4096);
        assert_eq!(
            fwd.key_size as usize,
            std::mem::size_of::<natgw_common::FwdKey>()
        );
    }

    #[test]
    fn netns_cookie_is_stable_within_a_namespace() {
        let (a, b) = (netns_cookie().unwrap(), netns_cookie().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, 0);
    }
}
