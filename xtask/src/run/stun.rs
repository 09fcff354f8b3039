//! The NAT-behaviour demonstration: `natgw stun probe` run from lan-a against an
//! RFC 5780 STUN server on wan-a (two addresses), once behind natgw and once behind
//! the kernel's own NAT (nftables masquerade, on a testbed of its own), so the two
//! classifications can be read side by side.

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;
use testbed::Testbed;

/// The STUN server's primary and alternate addresses on wan-a.
const SERVER: &str = "198.51.100.2:3478";
const ALTERNATE: &str = "198.51.100.3";

/// nftables masquerade on the gateway's WAN, the kernel NAT being compared.
const MASQUERADE: &str =
    "table ip natgwdemo {\n chain post {\n  type nat hook postrouting priority 100;\n  oifname \"wan0\" masquerade\n }\n}\n";

/// A STUN server on wan-a, stopped on drop.
struct Server(Child);

impl Server {
    fn start(natgw_bin: &Path, tb: &Testbed) -> Result<Self> {
        let ns = &tb.wan[0].ns;
        let added = ns
            .command("ip")
            .args(["addr", "add", &format!("{ALTERNATE}/24"), "dev", "eth0"])
            .status()
            .context("adding the STUN server's second address to wan-a")?;
        if !added.success() {
            bail!("could not add {ALTERNATE} to wan-a");
        }
        let child = ns
            .command(natgw_bin)
            .args([
                "stun",
                "serve",
                "--listen",
                SERVER,
                "--alternate",
                ALTERNATE,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `natgw stun serve` on wan-a")?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self(child))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the probe from lan-a; (mapping, filtering, public address).
fn probe(natgw_bin: &Path, tb: &Testbed) -> Result<(String, String, String)> {
    let out = tb.lan[0]
        .ns
        .command(natgw_bin)
        .args([
            "stun",
            "probe",
            "--server",
            SERVER,
            "--timeout",
            "2",
            "--json",
        ])
        .output()
        .context("running `natgw stun probe` on lan-a")?;
    let report: Value = serde_json::from_slice(&out.stdout).context("reading the probe's JSON")?;
    let field = |name: &str| {
        report[name]["result"]
            .as_str()
            .unwrap_or("undetermined")
            .to_owned()
    };
    let public = report["public_address"].as_str().unwrap_or("-").to_owned();
    Ok((field("mapping"), field("filtering"), public))
}

fn row(nat: &str, (mapping, filtering, public): &(String, String, String)) {
    println!("  {nat:<24} {mapping:<24} {filtering:<28} {public}");
}

/// Probes natgw on `tb` (natgw already running there), then the kernel NAT on a
/// testbed of its own. Returns the number of failed steps.
pub fn demonstrate(natgw_bin: &Path, tb: &Testbed) -> Result<usize> {
    println!("\nNAT behaviour discovery (RFC 5780): `natgw stun probe` on lan-a against a STUN server on wan-a");
    println!(
        "  {:<24} {:<24} {:<28} public address",
        "NAT", "mapping", "filtering"
    );
    let mut failures = 0;
    {
        let _server = Server::start(natgw_bin, tb)?;
        match probe(natgw_bin, tb) {
            Ok(r) => row("natgw (defaults)", &r),
            Err(e) => {
                println!("  FAIL  natgw: {e:#}");
                failures += 1;
            }
        }
    }
    let kernel = Testbed::new().context("building a second testbed for the kernel NAT")?;
    let mut nft = kernel
        .gateway
        .ns
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running nft (package nftables)")?;
    if let Some(mut stdin) = nft.stdin.take() {
        stdin
            .write_all(MASQUERADE.as_bytes())
            .context("writing the nft rules")?;
    }
    if !nft.wait().context("waiting for nft")?.success() {
        bail!("nft refused the masquerade rule");
    }
    let _server = Server::start(natgw_bin, &kernel)?;
    match probe(natgw_bin, &kernel) {
        Ok(r) => row("nftables masquerade", &r),
        Err(e) => {
            println!("  FAIL  kernel NAT: {e:#}");
            failures += 1;
        }
    }
    Ok(failures)
}
