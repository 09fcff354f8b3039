//! The role of this natgw in an active/standby pair.

/// Which side of an active/standby pair this natgw is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Translates traffic and replicates its state to the peer.
    Active,
    /// Receives the peer's state and installs it; translates only what reaches it.
    Standby,
}
