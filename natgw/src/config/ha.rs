//! The `[ha]` settings: NAT state replication between an active/standby pair
//! (`--ha-listen`, `--ha-peer`, `--ha-key-file`, `--ha-role`). Both gateways run the
//! same configuration but for the role. See docs/operations.md#replication.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Shortest pre-shared key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Longest key file read.
pub const MAX_KEY_LEN: usize = 4096;

/// Which side of the pair this natgw starts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaRoleChoice {
    /// Translates and replicates to the peer.
    #[default]
    Active,
    /// Installs what the peer replicates.
    Standby,
}

impl std::str::FromStr for HaRoleChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(Self::Active),
            "standby" => Ok(Self::Standby),
            _ => Err(format!("`{s}` is not a role: active or standby")),
        }
    }
}

impl std::fmt::Display for HaRoleChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Standby => "standby",
        })
    }
}

/// Replication settings; off unless `peer` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HaSettings {
    /// Where this natgw accepts its peer's connection (as standby).
    pub listen: Option<SocketAddrV4>,
    /// The peer's `listen` address: where this natgw connects (as active), and the
    /// only address a connection is accepted from.
    pub peer: Option<SocketAddrV4>,
    /// The pre-shared key (at least [`MIN_KEY_LEN`] bytes; readable by root only).
    pub key_file: Option<PathBuf>,
    /// The role at start.
    pub role: HaRoleChoice,
    /// keepalived moves the external addresses and sets the role (`--ha`).
    pub keepalived: bool,
}

impl HaSettings {
    /// Whether replication is configured.
    #[must_use]
    pub const fn enabled(&self) -> bool {
        self.peer.is_some()
    }
}

/// The `[ha]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHa {
    /// `listen`.
    pub listen: Option<SocketAddrV4>,
    /// `peer`.
    pub peer: Option<SocketAddrV4>,
    /// `key_file`.
    pub key_file: Option<PathBuf>,
    /// `role`.
    pub role: Option<HaRoleChoice>,
    /// `keepalived`.
    pub keepalived: Option<bool>,
}

/// The flags over the file.
#[must_use]
pub fn merge(
    file: Option<&FileHa>,
    listen: Option<SocketAddrV4>,
    peer: Option<SocketAddrV4>,
    key_file: Option<&PathBuf>,
    role: Option<HaRoleChoice>,
) -> HaSettings {
    HaSettings {
        listen: listen.or_else(|| file.and_then(|f| f.listen)),
        peer: peer.or_else(|| file.and_then(|f| f.peer)),
        key_file: key_file
            .cloned()
            .or_else(|| file.and_then(|f| f.key_file.clone())),
        role: role
            .or_else(|| file.and_then(|f| f.role))
            .unwrap_or_default(),
        keepalived: false,
    }
}

/// What is wrong with the `[ha]` settings, if anything.
#[must_use]
pub fn problem(ha: &HaSettings) -> Option<String> {
    let any = ha.listen.is_some() || ha.peer.is_some() || ha.key_file.is_some();
    if !any {
        return None;
    }
    let (Some(listen), Some(peer), Some(key_file)) = (ha.listen, ha.peer, &ha.key_file) else {
        return Some(
            "replication needs all of --ha-listen, --ha-peer and --ha-key-file (`[ha] listen`, \
             `peer`, `key_file`)"
                .to_owned(),
        );
    };
    if listen.port() == 0 || peer.port() == 0 {
        return Some("the replication addresses need a port (not 0)".to_owned());
    }
    if peer.ip().is_unspecified() || peer.ip().is_broadcast() || peer.ip().is_multicast() {
        return Some(format!(
            "the replication peer {peer} must be the other gateway's address"
        ));
    }
    if listen == peer {
        return Some(format!(
            "the replication listen address and peer are both {listen}: the peer is the other \
             gateway"
        ));
    }
    read_key(key_file).err()
}

/// Reads the pre-shared key: a file of [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes
/// (surrounding whitespace ignored) that only its owner may read. Without root
/// (`natgw check-config`), a file this user may not read is only checked for its
/// mode and size, and an empty key is returned.
///
/// # Errors
/// Unreadable, too short or too long, or readable by group or others.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot read the replication key file {}: {e}",
            path.display()
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "the replication key file {} is readable by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    if meta.len() > MAX_KEY_LEN as u64 {
        return Err(format!(
            "the replication key file {} is longer than {MAX_KEY_LEN} bytes",
            path.display()
        ));
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        // `natgw check-config` without root: the owner-only file is right as it is;
        // `natgw run` (root) reads it.
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && !nix::unistd::geteuid().is_root() =>
        {
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(format!(
                "cannot read the replication key file {}: {e}",
                path.display()
            ))
        }
    };
    let key = bytes.trim_ascii().to_vec();
    if key.len() < MIN_KEY_LEN {
        return Err(format!(
            "the replication key in {} has {} bytes; at least {MIN_KEY_LEN} are needed \
             (e.g. `head -c 32 /dev/urandom | base64 > {}`)",
            path.display(),
            key.len(),
            path.display()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(content: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!(
            "natgw-ha-key-{}-{}",
            std::process::id(),
            natgw_proto::util::rng::random_array::<4>()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn replication_needs_every_setting_and_a_private_key() {
        assert_eq!(problem(&HaSettings::default()), None, "off");
        let good = key_file(b"0123456789abcdef0123\n", 0o600);
        let mut ha = HaSettings {
            listen: Some("10.255.0.1:7780".parse().unwrap()),
            peer: Some("10.255.0.2:7780".parse().unwrap()),
            key_file: Some(good.clone()),
            role: HaRoleChoice::Standby,
            keepalived: false,
        };
        assert_eq!(problem(&ha), None);
        assert_eq!(read_key(&good).unwrap(), b"0123456789abcdef0123");
        let open = key_file(b"0123456789abcdef0123", 0o644);
        ha.key_file = Some(open.clone());
        assert!(problem(&ha).unwrap().contains("chmod 600"));
        let short = key_file(b"short", 0o600);
        ha.key_file = Some(short.clone());
        assert!(problem(&ha).unwrap().contains("at least 16"));
        ha.key_file = Some(good.clone());
        ha.peer = ha.listen;
        assert!(problem(&ha).unwrap().contains("both"));
        ha.peer = None;
        assert!(problem(&ha).unwrap().contains("all of"));
        for p in [good, open, short] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileHa {
            listen: Some("10.255.0.1:7780".parse().unwrap()),
            peer: Some("10.255.0.2:7780".parse().unwrap()),
            key_file: Some("/etc/natgw/ha.key".into()),
            role: Some(HaRoleChoice::Standby),
            keepalived: None,
        };
        let ha = merge(Some(&file), None, None, None, Some(HaRoleChoice::Active));
        assert_eq!(ha.role, HaRoleChoice::Active);
        assert_eq!(ha.peer, file.peer);
        assert!(ha.enabled());
        assert_eq!("standby".parse(), Ok(HaRoleChoice::Standby));
        assert!("primary".parse::<HaRoleChoice>().is_err());
    }
}
