//! Announcements: ANNOUNCE and the NAT-PMP address notice after a (re)start or an
//! external address change, and unsolicited MAP responses (RFC 6887 §14.1.3, §14.2;
//! RFC 6886 §3.2.1).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{
    filter_repr, Engine, Transmit, ANNOUNCE_GROUP, UNSOLICITED_COUNT, UNSOLICITED_FIRST_INTERVAL,
};
use crate::pcp::natpmp;
use crate::pcp::table::{ExplicitMapping, MappingTable, Origin};
use crate::pcp::wire::{self, MapRepr, OpRepr, Opcode, OptionRepr, ResultCode};

/// Schedule of one run of announcements.
#[derive(Debug, Clone, Copy)]
pub(super) struct Burst {
    pub(super) next: Instant,
    pub(super) interval: Duration,
    pub(super) remaining: u32,
    pub(super) map_updates: bool,
}

impl Burst {
    pub(super) const fn new(now: Instant, map_updates: bool) -> Self {
        Self {
            next: now,
            interval: UNSOLICITED_FIRST_INTERVAL,
            remaining: UNSOLICITED_COUNT,
            map_updates,
        }
    }
}

impl Engine {
    /// The announcements due at `now`, if any: each run sends [`UNSOLICITED_COUNT`]
    /// rounds, 250 ms apart at first and doubling (see [`Engine::announcements`]).
    pub fn unsolicited(&mut self, now: Instant, table: &impl MappingTable) -> Vec<Transmit> {
        let Some(burst) = self.burst.as_mut() else {
            return Vec::new();
        };
        if now < burst.next {
            return Vec::new();
        }
        let map_updates = burst.map_updates;
        burst.remaining = burst.remaining.saturating_sub(1);
        if burst.remaining == 0 {
            self.burst = None;
        } else {
            burst.next = now + burst.interval;
            burst.interval = burst.interval.saturating_mul(2);
        }
        self.announcements(now, table, map_updates)
    }

    /// One round of announcements: a PCP ANNOUNCE response and (NAT-PMP enabled, an
    /// external address known) a NAT-PMP external address response to
    /// [`ANNOUNCE_GROUP`]; with `map_updates`, an unsolicited MAP response to each
    /// PCP client with a live mapping (RFC 6887 §14.2).
    #[must_use]
    pub fn announcements(
        &self,
        now: Instant,
        table: &impl MappingTable,
        map_updates: bool,
    ) -> Vec<Transmit> {
        let mut out = vec![Transmit {
            destination: ANNOUNCE_GROUP,
            payload: self.announce_response(now),
        }];
        let address = table.external_address();
        if let (true, Some(a)) = (self.config.natpmp, address) {
            out.push(Transmit {
                destination: ANNOUNCE_GROUP,
                payload: self.natpmp_address_response(now, a),
            });
        }
        if map_updates && address.is_some() {
            out.extend(
                table
                    .explicit_all()
                    .iter()
                    .filter_map(|m| self.unsolicited_map(now, m)),
            );
        }
        out
    }

    /// An unsolicited ANNOUNCE response: SUCCESS, lifetime 0, the epoch (RFC 6887
    /// §14.1.3).
    #[must_use]
    pub fn announce_response(&self, now: Instant) -> Vec<u8> {
        wire::Response {
            opcode: Opcode::Announce,
            result: ResultCode::Success,
            lifetime: 0,
            epoch: self.epoch(now),
            op: Some(OpRepr::Announce),
            options: Vec::new(),
        }
        .to_bytes()
    }

    /// A NAT-PMP external address response, as multicast when the address changes
    /// (RFC 6886 §3.2.1).
    #[must_use]
    pub fn natpmp_address_response(&self, now: Instant, address: Ipv4Addr) -> Vec<u8> {
        natpmp::Response::ExternalAddress {
            result: natpmp::ResultCode::Success,
            epoch: self.epoch(now),
            address,
        }
        .to_bytes()
    }

    /// The unsolicited MAP response telling a PCP client its mapping's current
    /// external endpoint and remaining lifetime (RFC 6887 §14.2); `None` for NAT-PMP
    /// mappings and expired ones.
    #[must_use]
    pub fn unsolicited_map(&self, now: Instant, mapping: &ExplicitMapping) -> Option<Transmit> {
        if mapping.origin != Origin::Pcp || mapping.expires <= now {
            return None;
        }
        let remaining = mapping.expires.saturating_duration_since(now);
        let lifetime = u32::try_from(remaining.as_secs().max(1)).unwrap_or(u32::MAX);
        let mut options = Vec::new();
        if mapping.key.internal != *mapping.reply_to.ip() {
            options.push(OptionRepr::ThirdParty(
                mapping.key.internal.to_ipv6_mapped(),
            ));
        }
        let mut response = wire::Response {
            opcode: Opcode::Map,
            result: ResultCode::Success,
            lifetime,
            epoch: self.epoch(now),
            op: Some(OpRepr::Map(MapRepr {
                nonce: mapping.nonce,
                protocol: mapping.key.protocol.to_wire(),
                internal_port: mapping.key.internal_port,
                external_port: mapping.external.port(),
                external_address: mapping.external.ip().to_ipv6_mapped(),
            })),
            options,
        };
        for f in &mapping.filters {
            let option = OptionRepr::Filter(filter_repr(f));
            if response.buffer_len() + option.buffer_len() > wire::MAX_LEN {
                break;
            }
            response.options.push(option);
        }
        Some(Transmit {
            destination: mapping.reply_to,
            payload: response.to_bytes(),
        })
    }
}
