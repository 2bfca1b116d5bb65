//! One writer per network namespace.
//!
//! The lock is an nf_tables table, `inet meshinit_lock`, created empty with `flags owner`
//! on a netlink socket held for the run. Tables live in the network namespace, so every
//! meshinit working on it (from any container, mount namespace or CNI runtime) contends for
//! the same name; only a process with CAP_NET_ADMIN over the namespace can create one (the
//! kernel checks, so an unprivileged process can neither take nor fake the lock); `flags
//! owner` makes the kernel refuse everyone else's changes to it and delete it when the
//! socket closes, however the holder ends (kill -9 included), so a crash never leaves a
//! stale lock. Owner tables exist since Linux 5.12 (every kernel the VM tests run: 6.1 on).
//!
//! Where the kernel cannot hold one (no nf_tables, or a kernel before 5.12), the lock falls
//! back to what earlier versions used alone: an abstract unix socket bound inside the
//! namespace (`@meshinit/netns-lock`), released by the kernel too, but which any process
//! in the namespace can bind. With the table lock held, that socket is still bound when
//! free (so earlier versions wait for this run), but never waited for: an unprivileged
//! process binding it cannot block meshinit.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
use tracing::{debug, info};

use crate::backend::TimeBudget;
use crate::error::{Error, Result};
use crate::nftables::NftConnection;
use crate::nftables::model::TABLE_F_OWNER;

/// The abstract socket name (without the leading NUL).
const LOCK_NAME: &[u8] = b"meshinit/netns-lock";

/// The lock table (`inet`), empty: its existence is the lock.
pub const LOCK_TABLE: &str = "meshinit_lock";

/// Held while it lives; dropping it (or exiting) releases the namespace.
#[derive(Debug)]
pub struct NamespaceLock {
    _table: Option<TableLock>,
    _socket: Option<OwnedFd>,
}

/// The netlink socket owning the lock table: closing it deletes the table. (Held, never
/// read.)
struct TableLock(#[allow(dead_code)] NftConnection);

impl std::fmt::Debug for TableLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TableLock(inet {LOCK_TABLE})")
    }
}

/// What one attempt at the table lock found.
enum TableAttempt {
    Taken(TableLock),
    /// Another process holds it (its netlink port id when the kernel says).
    Held(Option<u32>),
    /// The kernel cannot hold such a lock here.
    Unsupported(String),
}

impl NamespaceLock {
    /// Takes the lock of the calling thread's network namespace, waiting for another
    /// meshinit at most until the budget's lock deadline.
    pub fn acquire(budget: &TimeBudget) -> Result<Self> {
        let mut waiter = Waiter::new(budget);
        let table = loop {
            match try_table_lock() {
                TableAttempt::Taken(lock) => break Some(lock),
                TableAttempt::Unsupported(why) => {
                    debug!(%why, "no nf_tables owner table here; locking with the abstract socket");
                    break None;
                }
                TableAttempt::Held(owner) => waiter.wait(|| {
                    format!(
                        "another meshinit (the owner of table inet {LOCK_TABLE}{}) is changing \
                         this network namespace's rules",
                        owner.map_or_else(String::new, |p| format!(", netlink port id {p}"))
                    )
                })?,
            }
        };
        let socket = loop {
            match try_socket_lock()? {
                Some(socket) => break Some(socket),
                // Only a privileged process holds the table lock; the socket anyone may
                // bind, so with the table held it is not waited for.
                None if table.is_some() => {
                    debug!(
                        "@meshinit/netns-lock is bound by another process; the table lock is held"
                    );
                    break None;
                }
                None => waiter.wait(|| {
                    "another meshinit (or a process bound to @meshinit/netns-lock: this kernel \
                     has no nf_tables owner tables, so the lock is that socket alone) is \
                     changing this network namespace's rules"
                        .to_owned()
                })?,
            }
        };
        Ok(NamespaceLock {
            _table: table,
            _socket: socket,
        })
    }
}

/// Waits with a growing pause until the budget's lock deadline.
struct Waiter<'a> {
    budget: &'a TimeBudget,
    pause: Duration,
    said_waiting: bool,
}

impl<'a> Waiter<'a> {
    fn new(budget: &'a TimeBudget) -> Self {
        Waiter {
            budget,
            pause: Duration::from_millis(1),
            said_waiting: false,
        }
    }

    fn wait(&mut self, holder: impl Fn() -> String) -> Result<()> {
        if Instant::now() >= self.budget.lock_deadline() {
            return Err(Error::Busy(format!(
                "{} and did not finish within --lock-timeout; nothing was changed, run again \
                 later",
                holder()
            )));
        }
        if !self.said_waiting {
            info!("{}; waiting for it", holder());
            self.said_waiting = true;
        }
        std::thread::sleep(self.pause.min(self.budget.lock_wait_left()));
        self.pause = (self.pause * 2).min(Duration::from_millis(50));
        Ok(())
    }
}

fn try_table_lock() -> TableAttempt {
    let mut connection = match NftConnection::open() {
        Ok(connection) => connection,
        Err(e) => return TableAttempt::Unsupported(e.to_string()),
    };
    // A holder can end between a refused create and the look at the table: then the create
    // is tried again at once.
    let mut refused_without_holder = 0;
    loop {
        match connection.create_owned_table(LOCK_TABLE) {
            Ok(Ok(())) => return TableAttempt::Taken(TableLock(connection)),
            // EPERM: owned by another socket, or we lack the privilege; EEXIST: a table of
            // that name without the owner flag (made by hand by a privileged process).
            Ok(Err(errno @ (libc::EPERM | libc::EEXIST))) => {
                match connection.table_info(LOCK_TABLE) {
                    Ok(Some(info)) if info.flags & TABLE_F_OWNER != 0 => {
                        return TableAttempt::Held(info.owner);
                    }
                    Ok(Some(_)) => return TableAttempt::Held(None),
                    Ok(None) if refused_without_holder < 2 => refused_without_holder += 1,
                    // Refused with no table there: the refusal is about us (no privilege);
                    // the commands that need it say so precisely.
                    Ok(None) | Err(_) => {
                        return TableAttempt::Unsupported(format!(
                            "creating table inet {LOCK_TABLE}: {}",
                            std::io::Error::from_raw_os_error(errno)
                        ));
                    }
                }
            }
            Ok(Err(errno)) => {
                return TableAttempt::Unsupported(format!(
                    "creating table inet {LOCK_TABLE} with flags owner: {}",
                    std::io::Error::from_raw_os_error(errno)
                ));
            }
            Err(e) => return TableAttempt::Unsupported(e.to_string()),
        }
    }
}

/// Binds the abstract socket; `None` when another process has it bound.
fn try_socket_lock() -> Result<Option<OwnedFd>> {
    let address = UnixAddr::new_abstract(LOCK_NAME)
        .map_err(|e| Error::Other(format!("namespace lock address: {e}")))?;
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("creating the namespace lock socket", e.into()))?;
    match bind(std::os::fd::AsRawFd::as_raw_fd(&socket), &address) {
        Ok(()) => Ok(Some(socket)),
        Err(Errno::EADDRINUSE) => Ok(None),
        Err(e) => Err(Error::io("taking the namespace lock", e.into())),
    }
}
