use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::pcp::wire::{MapRepr, OpRepr, Opcode, Packet, Request, Response, ResultCode};

const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 5351);
const CLIENT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const OUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const KEY: Key = (Protocol::Udp, 40000);

/// An upstream whose server answered the discovery at `now` (epoch 0).
fn upstream_at(now: Instant) -> Upstream {
    let mut u = Upstream::new(SERVER, CLIENT, [7; 12], now);
    u.handle_timeout(now);
    let reqs = sent(&mut u);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].op, OpRepr::Announce);
    let response = Response {
        opcode: Opcode::Announce,
        result: ResultCode::Success,
        lifetime: 0,
        epoch: 0,
        op: Some(OpRepr::Announce),
        options: Vec::new(),
    };
    assert_eq!(u.handle_response(now, SERVER, &response.to_bytes()), None);
    assert_eq!(u.availability(), Availability::Present);
    assert!(events(&mut u).contains(&Event::Present(SERVER)));
    u
}

fn sent(u: &mut Upstream) -> Vec<Request> {
    let mut out = Vec::new();
    while let Some(t) = u.poll_transmit() {
        assert_eq!(t.destination, SERVER);
        // The NAT-PMP external address requests (see the test about them).
        if t.payload[0] == natpmp::VERSION {
            continue;
        }
        out.push(Request::parse(&Packet::new_checked(&t.payload[..]).unwrap()).unwrap());
    }
    out
}

fn map_of(r: &Request) -> MapRepr {
    match r.op {
        OpRepr::Map(m) => m,
        _ => panic!("not MAP"),
    }
}

fn answer(r: &Request, result: ResultCode, lifetime: u32, epoch: u32, port: u16) -> Vec<u8> {
    let mut m = map_of(r);
    m.external_address = OUTER.to_ipv6_mapped();
    m.external_port = port;
    Response {
        opcode: Opcode::Map,
        result,
        lifetime,
        epoch,
        op: Some(OpRepr::Map(m)),
        options: Vec::new(),
    }
    .to_bytes()
}

fn events(u: &mut Upstream) -> Vec<Event> {
    std::iter::from_fn(|| u.poll_event()).collect()
}

/// Advances to each timeout up to `until`, collecting what was sent.
fn run_until(u: &mut Upstream, until: Instant) -> Vec<(Instant, Request)> {
    let mut out = Vec::new();
    while let Some(t) = u.poll_timeout() {
        if t > until {
            break;
        }
        u.handle_timeout(t);
        for r in sent(u) {
            out.push((t, r));
        }
    }
    out
}

#[test]
fn request_carries_own_endpoint_and_covers_local_lifetime() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(3600), t0);
    assert!(u.awaiting(&KEY));
    u.handle_timeout(t0);
    let reqs = sent(&mut u);
    assert_eq!(reqs.len(), 1);
    let m = map_of(&reqs[0]);
    assert_eq!(reqs[0].client_address, CLIENT.to_ipv6_mapped());
    assert_eq!(m.protocol, 17);
    assert_eq!(m.internal_port, 40000);
    assert_eq!(m.external_port, 40000, "the same port is suggested");
    assert!(reqs[0].lifetime >= 3600);

    let key = u.handle_response(
        t0,
        SERVER,
        &answer(&reqs[0], ResultCode::Success, 3600, 0, 50000),
    );
    assert_eq!(key, Some(KEY));
    assert_eq!(u.external(&KEY, t0), Some(SocketAddrV4::new(OUTER, 50000)));
    assert_eq!(u.external_address(t0), Some(OUTER));
    assert_eq!(u.availability(), Availability::Present);
    assert!(!u.awaiting(&KEY));
    let ev = events(&mut u);
    assert!(ev
        .iter()
        .any(|e| matches!(e, Event::Mapped { key: KEY, .. })));
}

#[test]
fn answers_from_elsewhere_or_with_another_nonce_are_ignored() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    let other = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 1), 5351);
    assert_eq!(
        u.handle_response(t0, other, &answer(&r, ResultCode::Success, 600, 0, 1)),
        None
    );
    let mut forged = r.clone();
    if let OpRepr::Map(m) = &mut forged.op {
        m.nonce = [0xee; 12];
    }
    assert_eq!(
        u.handle_response(t0, SERVER, &answer(&forged, ResultCode::Success, 600, 0, 1)),
        None
    );
    assert_eq!(u.external(&KEY, t0), None);
}

#[test]
fn retransmits_with_doubling_interval_then_gives_up_for_a_while() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    // Present first, so the bound is MAX_TRIES, not the discovery's.
    let other: Key = (Protocol::Tcp, 1);
    u.want(other, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 100_000, 0, 1));
    events(&mut u);

    u.want(KEY, t0 + Duration::from_secs(600), t0);
    let out: Vec<Instant> = run_until(&mut u, t0 + Duration::from_secs(140))
        .into_iter()
        .filter(|(_, r)| map_of(r).internal_port == KEY.1)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(out.len(), MAX_TRIES as usize, "{out:?}");
    for (i, pair) in out.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let base = IRT * 2u32.pow(i as u32);
        assert!(
            gap >= base.mul_f64(0.9) && gap <= base.mul_f64(1.1),
            "gap {i}: {gap:?}"
        );
    }
    assert!(events(&mut u).contains(&Event::Unanswered(KEY)));
    // ... and tries again RETRY_LATER after giving up.
    let later = run_until(&mut u, t0 + Duration::from_secs(400));
    assert!(later.iter().any(|(_, r)| map_of(r).internal_port == KEY.1));
}

#[test]
fn absent_server_is_given_up_quickly_and_probed_rarely() {
    let t0 = Instant::now();
    let mut u = Upstream::new(SERVER, CLIENT, [7; 12], t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.want((Protocol::Tcp, 2), t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    assert!(
        !u.awaiting(&KEY),
        "no local answer waits for an unknown server"
    );
    let mut out: Vec<Request> = sent(&mut u);
    out.extend(
        run_until(&mut u, t0 + Duration::from_secs(30))
            .into_iter()
            .map(|(_, r)| r),
    );
    // Only the discovery is sent: DISCOVERY_TRIES ANNOUNCEs, no MAP.
    assert_eq!(out.len(), DISCOVERY_TRIES as usize, "{out:?}");
    assert!(out.iter().all(|r| r.op == OpRepr::Announce));
    assert_eq!(u.availability(), Availability::Absent);
    assert!(events(&mut u).contains(&Event::Absent(SERVER)));
    assert!(
        !u.awaiting(&KEY),
        "no local answer waits for an absent server"
    );
    let t1 = t0 + Duration::from_secs(31);
    u.want((Protocol::Udp, 3), t1 + Duration::from_secs(600), t1);
    assert!(!u.awaiting(&(Protocol::Udp, 3)));
    // Nothing until the recheck, then one probe (a short discovery).
    assert!(run_until(&mut u, t0 + ABSENT_RECHECK).is_empty());
    let probe = run_until(&mut u, t0 + ABSENT_RECHECK + Duration::from_secs(12));
    assert_eq!(
        probe.len(),
        DISCOVERY_TRIES as usize,
        "one probe: {probe:?}"
    );
    assert!(probe.iter().all(|(_, r)| r.op == OpRepr::Announce));
    // The server answers the probe: every mapping is requested.
    let t = probe[probe.len() - 1].0;
    let response = Response {
        opcode: Opcode::Announce,
        result: ResultCode::Success,
        lifetime: 0,
        epoch: 1,
        op: Some(OpRepr::Announce),
        options: Vec::new(),
    };
    u.handle_response(t, SERVER, &response.to_bytes());
    assert_eq!(u.availability(), Availability::Present);
    let rest = run_until(&mut u, t);
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert!(rest.iter().all(|(_, r)| matches!(r.op, OpRepr::Map(_))));
}

#[test]
fn icmp_unreachable_makes_an_unknown_server_absent_at_once() {
    let t0 = Instant::now();
    let mut u = Upstream::new(SERVER, CLIENT, [7; 12], t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    assert_eq!(sent(&mut u).len(), 1);
    u.unreachable(t0);
    assert_eq!(u.availability(), Availability::Absent);
    assert!(!u.awaiting(&KEY));
    assert!(run_until(&mut u, t0 + Duration::from_secs(60)).is_empty());
}

#[test]
fn renews_at_half_lifetime_with_same_nonce_and_endpoint() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(7200), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    // The upstream grants less than asked.
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 1000, 0, 50000));
    let out = run_until(&mut u, t0 + Duration::from_secs(499));
    assert!(out.is_empty());
    let out = run_until(&mut u, t0 + Duration::from_secs(500));
    assert_eq!(out.len(), 1);
    let (t, renewal) = out[0].clone();
    let m = map_of(&renewal);
    assert_eq!(m.nonce, map_of(&r).nonce);
    assert_eq!(m.external_port, 50000);
    assert_eq!(m.external_address, OUTER.to_ipv6_mapped());
    assert!(renewal.lifetime >= 6700);
    assert!(u
        .handle_response(
            t,
            SERVER,
            &answer(&renewal, ResultCode::Success, 1000, 500, 50000)
        )
        .is_some());
    assert!(!events(&mut u)
        .iter()
        .any(|e| matches!(e, Event::EpochLost { .. })));
}

#[test]
fn local_renewal_past_the_upstream_lifetime_renews_upstream_at_once() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 601, 0, 50000));
    let t1 = t0 + Duration::from_secs(100);
    u.want(KEY, t1 + Duration::from_secs(3600), t1);
    let out = run_until(&mut u, t1);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.lifetime >= 3600);
}

#[test]
fn expiry_without_renewal_forgets_the_endpoint() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(100_000), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 120, 0, 50000));
    let end = t0 + Duration::from_secs(121);
    run_until(&mut u, end);
    assert_eq!(u.external(&KEY, end), None);
    assert!(events(&mut u).contains(&Event::Expired(KEY)));
}

#[test]
fn epoch_loss_requests_every_mapping_again() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    let k2: Key = (Protocol::Tcp, 8080);
    u.want(KEY, t0 + Duration::from_secs(7200), t0);
    u.handle_timeout(t0);
    let r1 = sent(&mut u).remove(0);
    u.handle_response(
        t0,
        SERVER,
        &answer(&r1, ResultCode::Success, 7200, 0, 50000),
    );
    let t1 = t0 + Duration::from_secs(10);
    u.want(k2, t1 + Duration::from_secs(7200), t1);
    u.handle_timeout(t1);
    let r2 = sent(&mut u).remove(0);
    // The upstream restarted: its epoch is back near 0.
    assert!(u
        .handle_response(
            t1,
            SERVER,
            &answer(&r2, ResultCode::Success, 7200, 3, 50001)
        )
        .is_some());
    assert!(events(&mut u).contains(&Event::EpochLost { epoch: 3 }));
    assert_eq!(u.external(&KEY, t1), None);
    assert_eq!(u.external(&k2, t1), Some(SocketAddrV4::new(OUTER, 50001)));
    let again = run_until(&mut u, t1);
    assert_eq!(again.len(), 1);
    assert_eq!(map_of(&again[0].1).internal_port, KEY.1);
    assert_eq!(map_of(&again[0].1).nonce, map_of(&r1).nonce);
}

#[test]
fn epoch_running_too_fast_is_a_loss_too() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(7200), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 7200, 0, 50000));
    let t1 = t0 + Duration::from_secs(100);
    u.handle_response(
        t1,
        SERVER,
        &answer(&r, ResultCode::Success, 7200, 101, 50000),
    );
    assert!(!events(&mut u)
        .iter()
        .any(|e| matches!(e, Event::EpochLost { .. })));
    let t2 = t1 + Duration::from_secs(100);
    u.handle_response(
        t2,
        SERVER,
        &answer(&r, ResultCode::Success, 7200, 4101, 50000),
    );
    assert!(events(&mut u)
        .iter()
        .any(|e| matches!(e, Event::EpochLost { .. })));
}

#[test]
fn release_deletes_upstream_with_bounded_retries() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 600, 0, 50000));
    events(&mut u);
    u.release(KEY, t0);
    assert!(u.entry(&KEY).is_none());
    let out = run_until(&mut u, t0 + Duration::from_secs(100));
    assert_eq!(out.len(), DELETE_TRIES as usize);
    for (_, d) in &out {
        assert_eq!(d.lifetime, 0);
        assert_eq!(map_of(d).nonce, map_of(&r).nonce);
    }
    assert!(events(&mut u).contains(&Event::Released(KEY)));
    assert_eq!(u.poll_timeout(), None);
}

#[test]
fn release_answered_ends_at_once() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 600, 0, 50000));
    u.release(KEY, t0);
    u.handle_timeout(t0);
    let d = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&d, ResultCode::Success, 0, 0, 0));
    assert!(events(&mut u).contains(&Event::Released(KEY)));
    assert_eq!(u.poll_timeout(), None);
}

#[test]
fn refusal_waits_before_asking_again() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::NoResources, 30, 0, 0));
    assert!(events(&mut u).contains(&Event::Refused {
        key: KEY,
        result: ResultCode::NoResources
    }));
    assert!(!u.awaiting(&KEY));
    assert!(run_until(&mut u, t0 + RETRY_LATER - Duration::from_secs(1)).is_empty());
    assert_eq!(run_until(&mut u, t0 + RETRY_LATER).len(), 1);
}

#[test]
fn new_wan_address_requests_again_from_it() {
    let t0 = Instant::now();
    let mut u = upstream_at(t0);
    u.want(KEY, t0 + Duration::from_secs(600), t0);
    u.handle_timeout(t0);
    let r = sent(&mut u).remove(0);
    u.handle_response(t0, SERVER, &answer(&r, ResultCode::Success, 600, 0, 50000));
    let new = Ipv4Addr::new(100, 64, 0, 9);
    u.set_client(new, t0);
    let out = run_until(&mut u, t0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.client_address, new.to_ipv6_mapped());
}

#[test]
fn nonces_depend_on_seed_and_key_only() {
    let t0 = Instant::now();
    let a = Upstream::new(SERVER, CLIENT, [7; 12], t0);
    let b = Upstream::new(SERVER, CLIENT, [7; 12], t0 + Duration::from_secs(5));
    let c = Upstream::new(SERVER, CLIENT, [8; 12], t0);
    assert_eq!(
        a.nonce_for(KEY),
        b.nonce_for(KEY),
        "a restart with the seed renews"
    );
    assert_ne!(a.nonce_for(KEY), c.nonce_for(KEY));
    assert_ne!(a.nonce_for(KEY), a.nonce_for((Protocol::Tcp, KEY.1)));
    assert_ne!(a.nonce_for(KEY), a.nonce_for((Protocol::Udp, KEY.1 + 1)));
}

#[test]
fn a_discovery_that_could_not_be_sent_is_retried_soon() {
    let t0 = Instant::now();
    let mut u = Upstream::new(SERVER, CLIENT, [7; 12], t0);
    u.handle_timeout(t0);
    assert_eq!(sent(&mut u).len(), 1);
    u.send_failed(t0);
    assert_eq!(u.poll_timeout(), Some(t0 + SEND_RETRY));
}

#[test]
fn the_upstream_address_is_asked_over_nat_pmp_before_any_grant() {
    let now = Instant::now();
    let mut u = Upstream::new(SERVER, CLIENT, [7; 12], now);
    u.handle_timeout(now);
    let announce = u.poll_transmit().expect("the discovery");
    assert_eq!(announce.payload[0], crate::pcp::wire::VERSION);
    let response = Response {
        opcode: Opcode::Announce,
        result: ResultCode::Success,
        lifetime: 0,
        epoch: 0,
        op: Some(OpRepr::Announce),
        options: Vec::new(),
    };
    u.handle_response(now, SERVER, &response.to_bytes());
    // Present: one NAT-PMP external address request goes out.
    let ask = u.poll_transmit().expect("the address request");
    assert_eq!(ask.payload, natpmp::Request::ExternalAddress.to_bytes());
    assert_eq!(u.external_address(now), None);
    let mut answer = [0u8; natpmp::EXTERNAL_ADDRESS_RESPONSE_LEN];
    let mut p = natpmp::Packet::new_unchecked(&mut answer[..]);
    p.set_header(
        natpmp::VERSION,
        natpmp::OP_EXTERNAL_ADDRESS | natpmp::RESPONSE_BIT,
    );
    p.set_external_address(OUTER);
    // From elsewhere: ignored.
    let other = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 9), 5351);
    assert_eq!(u.handle_response(now, other, &answer), None);
    assert_eq!(u.external_address(now), None);
    assert_eq!(u.handle_response(now, SERVER, &answer), None);
    assert_eq!(u.external_address(now), Some(OUTER));
    // A new client address asks again, and forgets the old answer meanwhile.
    u.set_client(Ipv4Addr::new(100, 64, 0, 3), now);
    assert_eq!(u.external_address(now), None);
    let again = std::iter::from_fn(|| u.poll_transmit())
        .any(|t| t.payload == natpmp::Request::ExternalAddress.to_bytes());
    assert!(again);
}
