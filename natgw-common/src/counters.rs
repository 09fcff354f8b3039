//! Indices of the per-CPU `COUNTERS` array: every verdict the data path reaches is
//! counted under one of these, so `natgw status` can say why a packet was dropped or
//! left to the kernel.

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// One counter slot in the per-CPU `COUNTERS` array.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];
            /// Number of slots in the `COUNTERS` map.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// Stable name used by `natgw status` and its JSON output.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }

            /// Whether this counter records a dropped packet (`drop_*`).
            #[must_use]
            pub const fn is_drop(self) -> bool {
                let name = self.name().as_bytes();
                name.len() > 5
                    && name[0] == b'd'
                    && name[1] == b'r'
                    && name[2] == b'o'
                    && name[3] == b'p'
                    && name[4] == b'_'
            }
        }
    };
}

counters! {
    /// Outbound packet translated and redirected by XDP.
    XdpOutRedirected = "xdp_out_redirected",
    /// Inbound packet translated and redirected by XDP.
    XdpInRedirected = "xdp_in_redirected",
    /// Outbound packet translated by TC on the WAN egress (kernel-forwarded path).
    TcOutTranslated = "tc_out_translated",
    /// Inbound packet translated by TC on the WAN ingress (kernel-forwarded path).
    TcInTranslated = "tc_in_translated",
    /// Hairpinned packet (internal host to an external endpoint that maps to an
    /// internal one) translated by TC on the LAN ingress (RFC 4787 REQ-9).
    HairpinTranslated = "hairpin_translated",
    /// Packet from an internal host to a service of the gateway on an external
    /// address, its source translated to the host's external endpoint.
    HairpinLocal = "hairpin_local",
    /// Reply of a gateway service to an internal host's external endpoint,
    /// translated back and sent to the host (`tc_lo_egress`).
    HairpinLocalReply = "hairpin_local_reply",
    /// A later fragment of a translated datagram translated by TC (RFC 4787 REQ-14).
    FragmentTranslated = "fragment_translated",
    /// An outbound non-atomic datagram (a fragment, or a packet without DF) left
    /// with an IP identification of the gateway's instead of the host's (RFC 6864,
    /// as RFC 7857 asks).
    IpIdRewritten = "ip_id_rewritten",
    /// A new mapping was created.
    MappingCreated = "mapping_created",
    /// Handed to the kernel: not IPv4.
    PassNotIpv4 = "pass_not_ipv4",
    /// Handed to the kernel: addressed to the gateway itself (its own services).
    PassLocal = "pass_local",
    /// Handed to the kernel: not NATed by natgw (other protocols, other destinations).
    PassNotNat = "pass_not_nat",
    /// Handed to the kernel for forwarding: egress cannot take XDP redirects.
    PassNoRedirect = "pass_no_redirect",
    /// Handed to the kernel: next hop's neighbour entry is not resolved yet.
    PassNoNeigh = "pass_no_neigh",
    /// Handed to the kernel: larger than the egress MTU (the kernel fragments or
    /// sends ICMP fragmentation needed).
    PassMtu = "pass_mtu",
    /// Handed to the kernel: TTL would expire (the kernel sends ICMP time exceeded).
    PassTtl = "pass_ttl",
    /// Handed to the kernel: the FIB lookup failed for another reason.
    PassFib = "pass_fib",
    /// Handed to the kernel: an IP fragment (translated on the TC path).
    PassFragment = "pass_fragment",
    /// Handed to the kernel: an outbound packet without DF, whose identification
    /// the TC path replaces (RFC 6864 non-atomic datagram).
    PassNonAtomic = "pass_non_atomic",
    /// Handed to TC: a packet to the external address from inside (hairpin or the
    /// gateway's own services).
    PassHairpin = "pass_hairpin",
    /// Handed to the kernel: an ICMP error (translated on the TC path).
    PassIcmpError = "pass_icmp_error",
    /// ICMP error about a mapped flow translated on its way in (RFC 5508 REQ-4).
    IcmpErrorInTranslated = "icmp_error_in_translated",
    /// ICMP error about a mapped flow translated on its way out (RFC 5508 REQ-5).
    IcmpErrorOutTranslated = "icmp_error_out_translated",
    /// Dropped: header too short or inconsistent.
    DropMalformed = "drop_malformed",
    /// Dropped: inbound packet for an external port with no mapping (or an outbound
    /// RST, SYN-ACK or FIN, which never create one).
    DropNoMapping = "drop_no_mapping",
    /// Dropped: inbound packet refused by its mapping's filter (ADF/APDF).
    DropFiltered = "drop_filtered",
    /// Dropped: no free external port for a new mapping.
    DropPortsExhausted = "drop_ports_exhausted",
    /// Dropped: the mapping table is full.
    DropTableFull = "drop_table_full",
    /// Dropped: packet from an internal address that natgw cannot translate
    /// (protocol or fragment it does not handle), so it never leaks outside.
    DropUntranslatable = "drop_untranslatable",
    /// Dropped here but held: an inbound later fragment that came before its first
    /// fragment, which the controller sends on once the first one is translated.
    DropFragmentHeld = "drop_fragment_held",
    /// Dropped: an inbound later fragment that could not be held (too large, or
    /// the stash helper failed).
    DropFragmentUnknown = "drop_fragment_unknown",
    /// Dropped: a fragment that would start (or hold) one more incomplete datagram
    /// from a source whose budget of them is spent: a fragment flood (RFC 4787
    /// REQ-14a).
    DropFragmentBudget = "drop_fragment_budget",
    /// Dropped: a source that cannot be genuine where the packet arrived. On the WAN:
    /// an internal address, an address of the gateway, a martian (0/8, 127/8,
    /// 224/4, 240/4) or a network/broadcast address of an attached prefix. On a LAN
    /// interface: anything but a host address of that interface's prefixes (the
    /// gateway's own addresses and the prefixes' network and broadcast addresses
    /// included).
    DropSpoofed = "drop_spoofed",
    /// Dropped: arrived on the WAN addressed straight to an internal host; only the
    /// external addresses lead inside, through a mapping.
    DropToInternal = "drop_to_internal",
    /// Dropped: a packet helper (store, checksum, redirect) failed.
    DropInternal = "drop_internal",
    /// Dropped by the last check on WAN egress: a packet about to leave the WAN with
    /// a source inside the internal prefixes. Whatever the reason (natgw not ready
    /// yet, a packet no path translated, a bug), no internal address leaves; a
    /// non-zero value means something upstream of the guard is wrong.
    DropLeakGuard = "drop_leak_guard",
    /// Dropped: a UDP length below the 8-byte header or beyond the IP payload
    /// (conntrack's "truncated/malformed packet"); never creates or refreshes state.
    DropUdpLength = "drop_udp_length",
    /// Dropped: a TCP flag combination no TCP stack sends (no flags, SYN with FIN or
    /// RST, FIN without ACK, ...: conntrack's `tcp_valid_flags`); never creates or
    /// refreshes state.
    DropTcpFlags = "drop_tcp_flags",
    /// Dropped: a UDP/TCP packet with a wrong checksum that would have created a
    /// mapping (verified on that path only; see `natgw_common::validate`).
    DropBadChecksum = "drop_bad_checksum",
    /// Handed to the kernel: an outbound packet with IP options, which the kernel
    /// validates (`ip_options_compile`) and acts on before `tc_wan_egress`
    /// translates it.
    PassIpOptions = "pass_ip_options",
    /// A later fragment of a datagram for the gateway itself (its first fragment
    /// went to a local socket or the gateway's kernel untranslated), left to the
    /// kernel untouched, which reassembles the datagram.
    FragmentLocal = "fragment_local",
    /// A reply counted in `hairpin_local_reply` too large for the LAN interface's
    /// MTU, sent on through the kernel's forwarding, which fragments (or segments)
    /// it.
    HairpinLocalReplyRouted = "hairpin_local_reply_routed",
    /// Dropped: a new mapping would take the internal host past its limit of
    /// external ports for the protocol (RFC 6888 REQ-4).
    DropHostPortLimit = "drop_host_port_limit",
    /// Dropped: the internal host creates new mappings faster than its rate allows
    /// (RFC 6888 REQ-4c).
    DropHostRateLimited = "drop_host_rate_limited",
    /// Dropped: no port was free for a new mapping but ports freed within the
    /// hold-down for another host (RFC 6888 REQ-8).
    DropPortHeld = "drop_port_held",
    /// A mapping was created but its record could not be reserved in the
    /// `MAPPING_EVENTS` ring buffer (full: `natgw monitor` clients missed it). The
    /// packet is translated all the same.
    EventLost = "event_lost",
    /// Dropped: in port-block mode (RFC 7422), an internal host outside the
    /// configured internal space, which has no block: never translated to another
    /// host's block, never leaked.
    DropOutsideBlocks = "drop_outside_blocks",
    /// Dropped: in port-block mode, an internal host of a share this gateway does
    /// not own (the upstream router sent it to the wrong gateway).
    DropShareNotOwned = "drop_share_not_owned",
}

impl Counter {
    /// Whether this counter records an outbound packet dropped because no mapping
    /// could be made for it (resources, or a per-host rule): its sender is told with
    /// an ICMP error (RFC 5508 REQ-8, RFC 6888 REQ-11).
    #[must_use]
    pub const fn is_no_mapping(self) -> bool {
        matches!(
            self,
            Self::DropPortsExhausted
                | Self::DropTableFull
                | Self::DropHostPortLimit
                | Self::DropHostRateLimited
                | Self::DropPortHeld
        )
    }
}

/// Slots in the `COUNTERS` map: more than there are counters, so that a natgw with
/// new counters can adopt the map of the one before it (see `natgw run`'s restart).
pub const COUNTER_SLOTS: u32 = 128;
const _: () = assert!(Counter::COUNT <= COUNTER_SLOTS);

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
            assert_eq!(c.is_drop(), c.name().starts_with("drop_"));
        }
    }
}
