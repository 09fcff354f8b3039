//! An in-memory [`RelayAllocator`] over a port range, for the engine's tests, the
//! fuzz target and anyone who needs relay addresses without sockets.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::{AllocError, RelayAllocator};

/// Hands out ports of one IP from a range, lowest first, and remembers which are
/// in use and which are reserved.
#[derive(Clone, Debug)]
pub struct FakeAllocator {
    ip: Ipv4Addr,
    ports: std::ops::RangeInclusive<u16>,
    /// Ports handed out.
    pub in_use: BTreeSet<u16>,
    /// Ports held by EVEN-PORT reservations.
    pub reserved: BTreeSet<u16>,
}

impl FakeAllocator {
    /// Ports `ports` of `ip`.
    #[must_use]
    pub const fn new(ip: Ipv4Addr, ports: std::ops::RangeInclusive<u16>) -> Self {
        Self {
            ip,
            ports,
            in_use: BTreeSet::new(),
            reserved: BTreeSet::new(),
        }
    }

    fn free(&self, port: u16) -> bool {
        !self.in_use.contains(&port) && !self.reserved.contains(&port)
    }
}

impl RelayAllocator for FakeAllocator {
    fn allocate(
        &mut self,
        even_port: bool,
        reserve_next: bool,
    ) -> Result<SocketAddrV4, AllocError> {
        let port = self
            .ports
            .clone()
            .find(|&p| {
                self.free(p)
                    && (!even_port || p % 2 == 0)
                    && (!reserve_next
                        || p.checked_add(1)
                            .is_some_and(|n| self.ports.contains(&n) && self.free(n)))
            })
            .ok_or(AllocError::Exhausted)?;
        self.in_use.insert(port);
        if reserve_next {
            self.reserved.insert(port + 1);
        }
        Ok(SocketAddrV4::new(self.ip, port))
    }

    fn claim(&mut self, reserved: SocketAddrV4) -> Result<(), AllocError> {
        if *reserved.ip() != self.ip || !self.reserved.remove(&reserved.port()) {
            return Err(AllocError::NotReserved);
        }
        self.in_use.insert(reserved.port());
        Ok(())
    }

    fn release(&mut self, addr: SocketAddrV4) {
        if *addr.ip() == self.ip {
            self.in_use.remove(&addr.port());
            self.reserved.remove(&addr.port());
        }
    }
}
