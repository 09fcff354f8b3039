//! Logging: `env_logger` configured from `RUST_LOG` (default `info`), and the task
//! that forwards the eBPF programs' aya-log records into it.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

/// Installs the process-wide logger. Lines read `[time LEVEL target] event k=v ...`.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

/// Starts forwarding the programs' log records. The logger owns the `AYA_LOGS` ring
/// buffer: it must outlive program loading (the programs refer to the map's fd), so
/// the returned task owns it for the daemon's lifetime. `None` when the object does
/// not log or the reader cannot be set up (then kernel log lines are lost, nothing
/// else).
pub fn forward_ebpf_logs(ebpf: &mut Ebpf) -> Option<JoinHandle<()>> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(aya_log::Error::MapNotFound) => {
            log::debug!("ebpf_log.absent the eBPF object has no AYA_LOGS map");
            return None;
        }
        Err(e) => {
            log::warn!("ebpf_log.unavailable error={e}: kernel-side log lines will not be shown");
            return None;
        }
    };
    // SAFETY: the logger owns the ring buffer map whose fd it returns; the fd stays
    // open and unchanged for as long as the logger (owned by the AsyncFd) lives.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("ebpf_log.unavailable error={e}: kernel-side log lines will not be shown");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    log::warn!("ebpf_log.stopped error={e}");
                    // Keep the logger (and its map) alive even though it is unread.
                    std::future::pending::<()>().await;
                }
            }
        }
    }))
}
