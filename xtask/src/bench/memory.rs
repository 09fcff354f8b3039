//! Memory of natgw's NAT tables per live mapping (issue #18: "≤ 256 B per live
//! mapping, sessions included, reported as used vs allocated").
//!
//! Method. *Allocated* is what the kernel charges each table (`memlock` in the map's
//! fdinfo). *Used* is what the live entries take: for a table that is not
//! preallocated (`BPF_F_NO_PREALLOC`) the kernel charges per live entry, so the
//! growth of `memlock` between the nearly empty and the full table, divided by the
//! entries added, is the per-entry cost in the kernel's own accounting; a
//! preallocated table charges its capacity up front, so there the per-entry cost is
//! the kernel's element size (`struct htab_elem`, 48 B on 64-bit, plus the key and the
//! value, each rounded up to 8 B). Entries are counted by walking each table.

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::maps::{MapData, MapInfo};
use natgw_common::maps::names;
use std::os::fd::AsFd as _;

use super::bpf;

/// The target: bytes per live mapping, its sessions included.
pub const TARGET_BYTES_PER_MAPPING: f64 = 256.0;

/// The NAT tables whose entries make up a mapping: forward, reverse, sessions.
const NAT_TABLES: [&str; 3] = [names::NAT_FWD, names::NAT_REV, names::NAT_SESSIONS];

/// `BPF_F_NO_PREALLOC`.
const BPF_F_NO_PREALLOC: u32 = 1;
/// `sizeof(struct htab_elem)` on 64-bit kernels: the node, the per-CPU pointer or LRU
/// node, the hash, aligned to 8.
const HTAB_ELEM_HEADER: u64 = 48;
/// `struct llist_node` the kernel's BPF memory allocator puts before every element of
/// a table that is not preallocated.
const LLIST_NODE: u64 = 8;

/// One NAT table at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableSnapshot {
    /// Map name.
    pub name: String,
    /// Live entries.
    pub entries: u64,
    /// `memlock` bytes.
    pub allocated_bytes: u64,
    /// Whether the kernel preallocated it (no `BPF_F_NO_PREALLOC`).
    pub preallocated: bool,
    /// Key size (bytes).
    pub key_size: u32,
    /// Value size (bytes).
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
}

impl TableSnapshot {
    /// The kernel's size of one element of this table, with the allocator's header
    /// when it is not preallocated.
    fn element_bytes(&self) -> u64 {
        let round8 = |n: u32| u64::from(n).div_ceil(8) * 8;
        HTAB_ELEM_HEADER
            + round8(self.key_size)
            + round8(self.value_size)
            + if self.preallocated { 0 } else { LLIST_NODE }
    }
}

/// Snapshots of natgw's NAT tables pinned in `pin_dir`.
pub fn snapshot(pin_dir: &Path) -> Result<Vec<TableSnapshot>> {
    NAT_TABLES
        .iter()
        .map(|name| {
            let path = pin_dir.join(name);
            let open = || format!("opening {}", path.display());
            let info = MapInfo::from_pin(&path).with_context(open)?;
            let map = MapData::from_pin(&path).with_context(open)?;
            let key_size = info.key_size();
            let max_entries = info.max_entries();
            Ok(TableSnapshot {
                name: (*name).to_owned(),
                entries: bpf::count_entries(map.fd().as_fd(), key_size as usize, max_entries)
                    .with_context(|| format!("counting the entries of {name}"))?,
                allocated_bytes: bpf::memlock(map.fd().as_fd())?,
                preallocated: info.map_flags() & BPF_F_NO_PREALLOC == 0,
                key_size,
                value_size: info.value_size(),
                max_entries,
            })
        })
        .collect()
}

/// One NAT table's use when full.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableUse {
    /// Map name.
    pub name: String,
    /// Live entries.
    pub entries: u64,
    /// Bytes per live entry (see the module's method).
    pub entry_bytes: f64,
    /// Whether `entry_bytes` is the kernel's own accounting (`memlock` growth) rather
    /// than its element size.
    pub measured: bool,
    /// Bytes the live entries use.
    pub used_bytes: f64,
    /// Bytes the kernel charges the table.
    pub allocated_bytes: u64,
    /// Whether the table is preallocated.
    pub preallocated: bool,
    /// Capacity.
    pub max_entries: u32,
}

/// The NAT tables' memory per live mapping.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NatMemory {
    /// Per table.
    pub tables: Vec<TableUse>,
    /// Live mappings (`NAT_FWD` entries).
    pub mappings: u64,
    /// Live sessions (`NAT_SESSIONS` entries).
    pub sessions: u64,
    /// Bytes the live entries of the three tables use.
    pub used_bytes: f64,
    /// Bytes the kernel charges the three tables.
    pub allocated_bytes: u64,
    /// `used_bytes` per live mapping, its sessions included.
    pub used_per_mapping: f64,
    /// `allocated_bytes` per live mapping.
    pub allocated_per_mapping: f64,
    /// One mapping without sessions: a forward and a reverse entry.
    pub mapping_without_sessions: f64,
    /// One session entry.
    pub per_session: f64,
    /// [`TARGET_BYTES_PER_MAPPING`].
    pub target_per_mapping: f64,
}

/// The use of the tables `full`, against the same tables `empty` (before they were
/// filled), per live mapping.
#[must_use]
pub fn per_mapping(empty: &[TableSnapshot], full: &[TableSnapshot]) -> NatMemory {
    let tables: Vec<TableUse> = full
        .iter()
        .map(|f| {
            let before = empty.iter().find(|e| e.name == f.name);
            let growth = before.and_then(|e| {
                let added = f.entries.checked_sub(e.entries)?;
                let grew = f.allocated_bytes.checked_sub(e.allocated_bytes)?;
                (!f.preallocated && added > 0 && grew > 0).then(|| grew as f64 / added as f64)
            });
            let entry_bytes = growth.unwrap_or(f.element_bytes() as f64);
            TableUse {
                name: f.name.clone(),
                entries: f.entries,
                entry_bytes,
                measured: growth.is_some(),
                used_bytes: entry_bytes * f.entries as f64,
                allocated_bytes: f.allocated_bytes,
                preallocated: f.preallocated,
                max_entries: f.max_entries,
            }
        })
        .collect();
    let get = |name: &str| tables.iter().find(|t| t.name == name);
    let entries = |name: &str| get(name).map_or(0, |t| t.entries);
    let entry_bytes = |name: &str| get(name).map_or(0.0, |t| t.entry_bytes);
    let mappings = entries(names::NAT_FWD);
    let used_bytes: f64 = tables.iter().map(|t| t.used_bytes).sum();
    let allocated_bytes: u64 = tables.iter().map(|t| t.allocated_bytes).sum();
    let per = |bytes: f64| {
        if mappings == 0 {
            0.0
        } else {
            bytes / mappings as f64
        }
    };
    NatMemory {
        mappings,
        sessions: entries(names::NAT_SESSIONS),
        used_per_mapping: per(used_bytes),
        allocated_per_mapping: per(allocated_bytes as f64),
        mapping_without_sessions: entry_bytes(names::NAT_FWD) + entry_bytes(names::NAT_REV),
        per_session: entry_bytes(names::NAT_SESSIONS),
        used_bytes,
        allocated_bytes,
        tables,
        target_per_mapping: TARGET_BYTES_PER_MAPPING,
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

/// The text lines of the million-mapping section: the target line first, then the
/// tables.
#[must_use]
pub fn text(m: &NatMemory) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let sessions_each = if m.mappings == 0 {
        0.0
    } else {
        m.sessions as f64 / m.mappings as f64
    };
    let verdict = if m.used_per_mapping <= m.target_per_mapping {
        "met".to_owned()
    } else {
        format!(
            "NOT met: {:.0} B over",
            m.used_per_mapping - m.target_per_mapping
        )
    };
    let _ = writeln!(
        o,
        "  Memory per live mapping ≤ {:.0} B: {:.0} B used, sessions included ({:.2} \
         sessions per mapping), {:.0} B allocated — {verdict}",
        m.target_per_mapping, m.used_per_mapping, sessions_each, m.allocated_per_mapping
    );
    let _ = writeln!(
        o,
        "    a mapping without sessions {:.0} B (forward + reverse entry), each session \
         {:.0} B; {} mappings, {} sessions: {} used of {} allocated",
        m.mapping_without_sessions,
        m.per_session,
        m.mappings,
        m.sessions,
        mib(m.used_bytes),
        mib(m.allocated_bytes as f64)
    );
    for t in &m.tables {
        let _ = writeln!(
            o,
            "    {:<13} {:>8} entries × {:>5.1} B ({}) = {:>10} used of {:>10} allocated \
             ({}, {} entries)",
            t.name,
            t.entries,
            t.entry_bytes,
            if t.measured {
                "kernel's accounting"
            } else {
                "element size"
            },
            mib(t.used_bytes),
            mib(t.allocated_bytes as f64),
            if t.preallocated {
                "preallocated"
            } else {
                "not preallocated"
            },
            t.max_entries
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, entries: u64, allocated: u64, preallocated: bool) -> TableSnapshot {
        TableSnapshot {
            name: name.to_owned(),
            entries,
            allocated_bytes: allocated,
            preallocated,
            key_size: 8,
            value_size: 40,
            max_entries: 1_100_000,
        }
    }

    #[test]
    fn growth_is_the_cost_of_a_table_that_is_not_preallocated() {
        let empty = [
            table(names::NAT_FWD, 10, 1000 + 10 * 104, false),
            table(names::NAT_REV, 10, 1000 + 10 * 104, false),
        ];
        let full = [
            table(names::NAT_FWD, 110, 1000 + 110 * 104, false),
            table(names::NAT_REV, 110, 1000 + 110 * 104, false),
        ];
        let m = per_mapping(&empty, &full);
        assert_eq!(m.mappings, 110);
        assert!(m.tables.iter().all(|t| t.measured));
        assert!((m.mapping_without_sessions - 208.0).abs() < 1e-9);
        assert!((m.used_per_mapping - 208.0).abs() < 1e-9);
        assert!((m.allocated_per_mapping - (2000.0 / 110.0 + 208.0)).abs() < 1e-9);
        assert!(text(&m).contains("≤ 256 B: 208 B used"));
    }

    #[test]
    fn a_preallocated_table_costs_its_element_size_per_entry() {
        let empty = [table(names::NAT_FWD, 0, 5_000_000, true)];
        let full = [table(names::NAT_FWD, 100, 5_000_000, true)];
        let m = per_mapping(&empty, &full);
        // 48 B header + 8 B key + 40 B value.
        assert!((m.used_per_mapping - 96.0).abs() < 1e-9);
        assert!(!m.tables[0].measured);
        assert!((m.allocated_per_mapping - 50_000.0).abs() < 1e-9);
    }

    #[test]
    fn over_the_target_says_by_how_much() {
        let empty = [table(names::NAT_FWD, 0, 0, false)];
        let full = [table(names::NAT_FWD, 1, 300, false)];
        let m = per_mapping(&empty, &full);
        assert!(text(&m).contains("NOT met: 44 B over"), "{}", text(&m));
    }
}
