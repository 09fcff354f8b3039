//! STUN (RFC 8489) with RFC 5780 NAT behaviour discovery: the message codec
//! (`wire`), the sans-IO Binding responder (`responder`), the tokio loop that runs it on
//! sockets (`server`), and the discovery client that tests any NAT (`probe`).

use crate::cli::{StunArgs, StunCommand};

/// `natgw stun ...`.
///
/// # Errors
/// Whatever the subcommand reports.
pub async fn command(args: &StunArgs) -> anyhow::Result<()> {
    match &args.command {
        StunCommand::Probe(probe) => crate::clients::stun_probe::command(probe).await,
        StunCommand::Serve(serve) => crate::services::stun::serve(serve).await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    use clap::Parser as _;

    use crate::cli::{Cli, Command, StunCommand};

    fn stun(args: &[&str]) -> Result<StunCommand, clap::Error> {
        let cli = Cli::try_parse_from(["natgw", "stun"].iter().chain(args))?;
        match cli.command {
            Command::Stun(s) => Ok(s.command),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn probe_flags_parse() {
        let StunCommand::Probe(p) = stun(&[
            "probe",
            "--server",
            "stun.example:3479",
            "--local",
            "10.0.0.2:4000",
            "--timeout",
            "1.5",
            "--json",
        ])
        .unwrap() else {
            panic!("not probe");
        };
        assert_eq!(p.server, "stun.example:3479");
        assert_eq!(
            p.local,
            Some(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 4000))
        );
        assert_eq!(p.timeout, Duration::from_millis(1500));
        assert!(p.json);
        let StunCommand::Probe(p) = stun(&["probe", "--server", "x"]).unwrap() else {
            panic!("not probe");
        };
        assert_eq!(p.timeout, Duration::from_secs(3));
        assert!(stun(&["probe", "--server", "x", "--timeout", "0"]).is_err());
        assert!(stun(&["probe", "--server", "x", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn serve_flags_parse() {
        let StunCommand::Serve(s) = stun(&[
            "serve",
            "--listen",
            "192.0.2.1:3478",
            "--alternate",
            "192.0.2.2",
            "--alternate-port",
            "4000",
        ])
        .unwrap() else {
            panic!("not serve");
        };
        assert_eq!(
            s.listen,
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 3478)
        );
        assert_eq!(s.alternate, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(s.alternate_port, 4000);
        // An alternate port means nothing without an alternate address.
        assert!(stun(&[
            "serve",
            "--listen",
            "192.0.2.1:3478",
            "--alternate-port",
            "9"
        ])
        .is_err());
        assert!(stun(&["serve"]).is_err());
    }
}
