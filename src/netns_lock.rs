//! One writer per network namespace. The lock is an abstract unix socket bound inside the
//! namespace: abstract names are scoped to the network namespace, so every meshinit working
//! on the same namespace (from any container, mount namespace or CNI runtime) contends for
//! the same name, and the kernel releases it when the holder exits, even by kill -9, so a
//! crash never leaves a stale lock.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
use tracing::info;

use crate::backend::TimeBudget;
use crate::error::{Error, Result};

/// The abstract socket name (without the leading NUL).
const LOCK_NAME: &[u8] = b"meshinit/netns-lock";

/// Held while it lives; dropping it (or exiting) releases the namespace.
#[derive(Debug)]
pub struct NamespaceLock {
    _socket: OwnedFd,
}

impl NamespaceLock {
    /// Takes the lock of the calling thread's network namespace, waiting for another
    /// meshinit at most until the budget's lock deadline.
    pub fn acquire(budget: &TimeBudget) -> Result<Self> {
        let address = UnixAddr::new_abstract(LOCK_NAME)
            .map_err(|e| Error::Other(format!("namespace lock address: {e}")))?;
        let mut pause = Duration::from_millis(1);
        let mut said_waiting = false;
        loop {
            let socket = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| Error::io("creating the namespace lock socket", e.into()))?;
            match bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &address) {
                Ok(()) => return Ok(NamespaceLock { _socket: socket }),
                Err(Errno::EADDRINUSE) => {}
                Err(e) => return Err(Error::io("taking the namespace lock", e.into())),
            }
            if Instant::now() >= budget.lock_deadline() {
                return Err(Error::Busy(
                    "another meshinit is changing this network namespace's rules and did not \
                     finish within --lock-timeout; nothing was changed, run again later"
                        .into(),
                ));
            }
            if !said_waiting {
                info!("another meshinit is working on this namespace; waiting for it");
                said_waiting = true;
            }
            std::thread::sleep(pause.min(budget.lock_wait_left()));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
