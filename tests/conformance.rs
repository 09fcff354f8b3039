//! The conformance suite against natgw, one test per requirement id of
//! RFC-REQUIREMENTS.md (RFC 4787, RFC 5382 with RFC 7857, RFC 5508, and RFC 6888 where
//! traffic shows it): each runs the
//! check of the `natgw-conformance` crate with that name and asserts that it
//! passes. `cargo xtask conformance` runs the same checks and prints them as a table,
//! next to the kernel's nftables masquerade.

use natgw_conformance::assert_natgw_passes;

#[test]
fn rfc4787_req_1_endpoint_independent_mapping() {
    // rfc4787 REQ-1: endpoint-independent mapping
    assert_natgw_passes("rfc4787_req_1_endpoint_independent_mapping");
}

#[test]
fn port_preservation() {
    // rfc4787 port preservation: the internal port is kept when it is free
    assert_natgw_passes("port_preservation");
}

#[test]
fn rfc4787_req_2_paired_address_pooling() {
    // rfc4787 REQ-2: paired address pooling
    assert_natgw_passes("rfc4787_req_2_paired_address_pooling");
}

#[test]
fn rfc4787_req_3_no_port_overloading() {
    // rfc4787 REQ-3: no port overloading; drop when no port is free
    assert_natgw_passes("rfc4787_req_3_no_port_overloading");
}

#[test]
fn rfc4787_req_3a_port_range_class() {
    // rfc4787 REQ-3a: system ports map to system ports, others to others
    assert_natgw_passes("rfc4787_req_3a_port_range_class");
}

#[test]
fn rfc4787_req_4_port_parity() {
    // rfc4787 REQ-4: port parity preserved
    assert_natgw_passes("rfc4787_req_4_port_parity");
}

#[test]
fn rfc4787_req_5_udp_mapping_timeout() {
    // rfc4787 REQ-5: mapping timeout >= 2 min, configurable, default >= 5 min
    assert_natgw_passes("rfc4787_req_5_udp_mapping_timeout");
}

#[test]
fn rfc4787_req_6_outbound_refresh() {
    // rfc4787 REQ-6: outbound packets refresh the mapping
    assert_natgw_passes("rfc4787_req_6_outbound_refresh");
}

#[test]
fn rfc4787_req_6a_inbound_refresh_configurable() {
    // rfc4787 REQ-6a: inbound refresh is configurable
    assert_natgw_passes("rfc4787_req_6a_inbound_refresh_configurable");
}

#[test]
fn rfc4787_req_7_overlapping_prefixes_refused() {
    // rfc4787 REQ-7: overlapping internal and external prefixes are refused
    assert_natgw_passes("rfc4787_req_7_overlapping_prefixes_refused");
}

#[test]
fn rfc4787_req_8_endpoint_independent_filtering() {
    // rfc4787 REQ-8 EIF: endpoint-independent filtering
    assert_natgw_passes("rfc4787_req_8_endpoint_independent_filtering");
}

#[test]
fn rfc4787_req_8_address_dependent_filtering() {
    // rfc4787 REQ-8 ADF: address-dependent filtering
    assert_natgw_passes("rfc4787_req_8_address_dependent_filtering");
}

#[test]
fn rfc4787_req_8_address_and_port_dependent_filtering() {
    // rfc4787 REQ-8 APDF: address-and-port-dependent filtering
    assert_natgw_passes("rfc4787_req_8_address_and_port_dependent_filtering");
}

#[test]
fn rfc4787_req_9_udp_hairpinning() {
    // rfc4787 REQ-9: hairpinning
    assert_natgw_passes("rfc4787_req_9_udp_hairpinning");
}

#[test]
fn rfc4787_req_9a_hairpin_source_is_external() {
    // rfc4787 REQ-9a: a hairpinned packet's source is the sender's external endpoint
    assert_natgw_passes("rfc4787_req_9a_hairpin_source_is_external");
}

#[test]
fn rfc4787_req_10_no_alg() {
    // rfc4787 REQ-10: no ALG rewrites payloads
    assert_natgw_passes("rfc4787_req_10_no_alg");
}

#[test]
fn rfc4787_req_11_deterministic() {
    // rfc4787 REQ-11: behaviour does not change with load or time
    assert_natgw_passes("rfc4787_req_11_deterministic");
}

#[test]
fn rfc4787_req_12_icmp_does_not_kill_mapping() {
    // rfc4787 REQ-12: no ICMP message kills a mapping
    assert_natgw_passes("rfc4787_req_12_icmp_does_not_kill_mapping");
}

#[test]
fn rfc4787_req_12a_icmp_from_any_source() {
    // rfc4787 REQ-12a: ICMP errors are not filtered by source
    assert_natgw_passes("rfc4787_req_12a_icmp_from_any_source");
}

#[test]
fn rfc4787_req_12b_destination_unreachable_translated() {
    // rfc4787 REQ-12b: destination unreachable reaches the internal host
    assert_natgw_passes("rfc4787_req_12b_destination_unreachable_translated");
}

#[test]
fn rfc4787_req_13_fragmentation_needed_and_fragmenting() {
    // rfc4787 REQ-13: DF and too big: fragmentation needed; no DF: fragmented
    assert_natgw_passes("rfc4787_req_13_fragmentation_needed_and_fragmenting");
}

#[test]
fn rfc4787_req_14_fragments_in_and_out_of_order() {
    // rfc4787 REQ-14: fragments in and out of order are translated
    assert_natgw_passes("rfc4787_req_14_fragments_in_and_out_of_order");
}

#[test]
fn rfc4787_req_14a_fragment_flood_does_not_starve() {
    // rfc4787 REQ-14a: a fragment flood does not starve normal traffic
    assert_natgw_passes("rfc4787_req_14a_fragment_flood_does_not_starve");
}

#[test]
fn rfc5382_req_1_tcp_endpoint_independent_mapping() {
    // rfc5382 REQ-1: endpoint-independent mapping for TCP
    assert_natgw_passes("rfc5382_req_1_tcp_endpoint_independent_mapping");
}

#[test]
fn rfc5382_req_2_simultaneous_open() {
    // rfc5382 REQ-2: every valid TCP sequence, simultaneous open included
    assert_natgw_passes("rfc5382_req_2_simultaneous_open");
}

#[test]
fn rfc5382_req_3_tcp_endpoint_independent_filtering() {
    // rfc5382 REQ-3 EIF: TCP endpoint-independent filtering
    assert_natgw_passes("rfc5382_req_3_tcp_endpoint_independent_filtering");
}

#[test]
fn rfc5382_req_3a_tcp_address_dependent_filtering() {
    // rfc5382 REQ-3a ADF: TCP filtering configurable: address-dependent
    assert_natgw_passes("rfc5382_req_3a_tcp_address_dependent_filtering");
}

#[test]
fn rfc5382_req_3b_tcp_filtering_independent_of_udp() {
    // rfc5382 REQ-3b: TCP filtering independent of UDP's
    assert_natgw_passes("rfc5382_req_3b_tcp_filtering_independent_of_udp");
}

#[test]
fn rfc5382_req_4_unsolicited_syn_silent_for_6_s() {
    // rfc5382 REQ-4: no answer to an unsolicited SYN for 6 s, then port unreachable
    assert_natgw_passes("rfc5382_req_4_unsolicited_syn_silent_for_6_s");
}

#[test]
fn rfc5382_req_4_held_syn_allows_hole_punching() {
    // rfc5382 REQ-4 punch: an inbound SYN followed by an outbound one connects
    assert_natgw_passes("rfc5382_req_4_held_syn_allows_hole_punching");
}

#[test]
fn rfc5382_req_5_tcp_timeouts() {
    // rfc5382 REQ-5: established >= 2 h 4 min, transitory >= 4 min, configurable
    assert_natgw_passes("rfc5382_req_5_tcp_timeouts");
}

#[test]
fn rfc5382_req_7_tcp_no_port_overloading() {
    // rfc5382 REQ-7: no port overloading for TCP
    assert_natgw_passes("rfc5382_req_7_tcp_no_port_overloading");
}

#[test]
fn rfc5382_req_8_tcp_hairpinning() {
    // rfc5382 REQ-8: hairpinning for TCP
    assert_natgw_passes("rfc5382_req_8_tcp_hairpinning");
}

#[test]
fn rfc5382_req_9_icmp_unreachable_for_tcp_translated() {
    // rfc5382 REQ-9: destination unreachable about TCP is translated
    assert_natgw_passes("rfc5382_req_9_icmp_unreachable_for_tcp_translated");
}

#[test]
fn rfc5382_req_10_icmp_does_not_end_tcp() {
    // rfc5382 REQ-10: no ICMP message ends a connection
    assert_natgw_passes("rfc5382_req_10_icmp_does_not_end_tcp");
}

#[test]
fn rfc7857_tcp_state_tracked() {
    // rfc7857 TCP state: TCP state tracked, separate open and closing timeouts
    assert_natgw_passes("rfc7857_tcp_state_tracked");
}

#[test]
fn rfc7857_rst_translated_and_session_kept() {
    // rfc7857 RST: RST translated, session kept 4 min
    assert_natgw_passes("rfc7857_rst_translated_and_session_kept");
}

#[test]
fn rfc7857_outbound_rst_does_not_refresh() {
    // rfc7857 RST refresh: an outbound RST in reply to inbound does not refresh
    assert_natgw_passes("rfc7857_outbound_rst_does_not_refresh");
}

#[test]
fn rfc7857_outbound_icmp_error_does_not_refresh() {
    // rfc7857 ICMP refresh: an outbound ICMP error in reply to inbound does not refresh
    assert_natgw_passes("rfc7857_outbound_icmp_error_does_not_refresh");
}

#[test]
fn rfc7857_ip_id_of_fragments_unique() {
    // rfc7857 IP ID: IP IDs of fragmented datagrams stay unique (RFC 6864)
    assert_natgw_passes("rfc7857_ip_id_of_fragments_unique");
}

#[test]
fn rfc5508_req_1_echo_through_nat() {
    // rfc5508 REQ-1: echo request and reply pass
    assert_natgw_passes("rfc5508_req_1_echo_through_nat");
}

#[test]
fn rfc5508_req_1a_query_id_mapping_endpoint_independent() {
    // rfc5508 REQ-1a: query identifier mapping is endpoint-independent
    assert_natgw_passes("rfc5508_req_1a_query_id_mapping_endpoint_independent");
}

#[test]
fn rfc5508_req_2_query_session_timeout() {
    // rfc5508 REQ-2: query session >= 60 s, configurable
    assert_natgw_passes("rfc5508_req_2_query_session_timeout");
}

#[test]
fn rfc5508_req_3_icmp_error_validation() {
    // rfc5508 REQ-3: errors with bad checksums dropped; options, transport checksum,
    // RFC 4884 handled
    assert_natgw_passes("rfc5508_req_3_icmp_error_validation");
}

#[test]
fn rfc5508_req_4_inbound_error_translated() {
    // rfc5508 REQ-4: inbound error rewritten to internal form; no mapping, dropped
    assert_natgw_passes("rfc5508_req_4_inbound_error_translated");
}

#[test]
fn rfc5508_req_5_outbound_error_translated() {
    // rfc5508 REQ-5: outbound error rewritten to external form
    assert_natgw_passes("rfc5508_req_5_outbound_error_translated");
}

#[test]
fn rfc5508_req_6_error_does_not_refresh_query() {
    // rfc5508 REQ-6: an error about a query session neither refreshes nor deletes it
    assert_natgw_passes("rfc5508_req_6_error_does_not_refresh_query");
}

#[test]
fn rfc5508_req_7_hairpinned_icmp_error() {
    // rfc5508 REQ-7: hairpinned ICMP errors traverse
    assert_natgw_passes("rfc5508_req_7_hairpinned_icmp_error");
}

#[test]
fn rfc5508_req_7a_hairpinned_error_outer_destination() {
    // rfc5508 REQ-7a: a hairpinned error's outer addresses are fixed up
    assert_natgw_passes("rfc5508_req_7a_hairpinned_error_outer_destination");
}

#[test]
fn rfc5508_req_8_unreachable_code_13_when_no_mapping() {
    // rfc5508 REQ-8: no mapping possible: ICMP destination unreachable code 13
    assert_natgw_passes("rfc5508_req_8_unreachable_code_13_when_no_mapping");
}

#[test]
fn rfc5508_req_10_icmp_types() {
    // rfc5508 REQ-10: unreachable, time exceeded, parameter problem, echo, timestamp
    assert_natgw_passes("rfc5508_req_10_icmp_types");
}

#[test]
fn rfc6888_req_2_paired_pooling_by_default() {
    // rfc6888 REQ-2: paired address pooling by default
    assert_natgw_passes("rfc6888_req_2_paired_pooling_by_default");
}

#[test]
fn rfc6888_req_4_external_ports_limited_per_host() {
    // rfc6888 REQ-4: external ports (and ICMP identifiers) limited per host, per protocol
    assert_natgw_passes("rfc6888_req_4_external_ports_limited_per_host");
}

#[test]
fn rfc6888_req_4c_new_mappings_rate_limited_per_host() {
    // rfc6888 REQ-4c: the rate of new mappings limited per host
    assert_natgw_passes("rfc6888_req_4c_new_mappings_rate_limited_per_host");
}

#[test]
fn rfc6888_req_7_endpoint_independent_filtering_by_default() {
    // rfc6888 REQ-7: endpoint-independent filtering by default
    assert_natgw_passes("rfc6888_req_7_endpoint_independent_filtering_by_default");
}

#[test]
fn rfc6888_req_8_freed_port_held_from_other_hosts() {
    // rfc6888 REQ-8: a freed port goes to no other host for the hold-down; its host may reuse it
    assert_natgw_passes("rfc6888_req_8_freed_port_held_from_other_hosts");
}

#[test]
fn rfc6888_req_9_pcp_creates_explicit_mappings() {
    // rfc6888 REQ-9: explicit mappings by PCP
    assert_natgw_passes("rfc6888_req_9_pcp_creates_explicit_mappings");
}

#[test]
fn rfc6888_req_11_no_mapping_drop_host_unreachable_no_eviction() {
    // rfc6888 REQ-11: no mapping possible: drop, ICMP host unreachable, no eviction
    assert_natgw_passes("rfc6888_req_11_no_mapping_drop_host_unreachable_no_eviction");
}
