//! The SOAP control parser on arbitrary bodies (the first byte picks a SOAPACTION):
//! no panics, the limits hold, and whatever parses types into an action or a fault
//! without panicking; a body whose prolog holds a DOCTYPE never parses (no entity
//! expansion). With the top bit of the first byte, the same body goes to
//! WANCommonInterfaceConfig's parser.

#![no_main]

use libfuzzer_sys::fuzz_target;
use natgw_proto::upnp::soap::{parse_call, parse_cif_call, Action, Limits};

const ACTIONS: [&str; 6] = [
    "AddPortMapping",
    "AddAnyPortMapping",
    "DeletePortMappingRange",
    "GetListOfPortMappings",
    "GetGenericPortMappingEntry",
    "GetStatusInfo",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let header = format!(
        "\"urn:schemas-upnp-org:service:WANIPConnection:{}#{}\"",
        1 + (pick & 1),
        ACTIONS[usize::from(pick >> 1) % ACTIONS.len()]
    );
    let limits = Limits::default();
    let prolog_doctype = std::str::from_utf8(body).is_ok_and(|t| {
        let t = t.trim_start();
        let t = match t.strip_prefix("<?xml") {
            Some(rest) => rest.split_once("?>").map_or("", |(_, r)| r).trim_start(),
            None => t,
        };
        t.starts_with("<!DOCTYPE")
    });
    if pick & 0x80 != 0 {
        let header =
            "\"urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1#GetCommonLinkProperties\"";
        match parse_cif_call(Some(header), body, &limits) {
            Ok((_, args)) => {
                assert!(!prolog_doctype, "a DOCTYPE was accepted");
                assert!(args.len() <= limits.max_args);
            }
            Err(e) => {
                let _ = e.fault();
            }
        }
        return;
    }
    match parse_call(Some(&header), body, &limits) {
        Ok(call) => {
            assert!(!prolog_doctype, "a DOCTYPE was accepted");
            assert!(call.args.len() <= limits.max_args);
            assert!(call
                .args
                .iter()
                .all(|(_, v)| v.chars().count() <= limits.max_value));
            let _ = Action::from_call(&call);
        }
        Err(e) => {
            let _ = e.fault();
        }
    }
});
