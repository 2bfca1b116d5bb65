//! The one way into position before touching any rule, for every command and CNI verb:
//! enter the target namespace, refuse the machine's own (and, for CNI, the runtime's),
//! check the capabilities the work needs and drop all others, and take this namespace's
//! turn (the lock) when the work changes rules.

use std::path::Path;

use caps::Capability;

use crate::backend::TimeBudget;
use crate::error::{Error, Result};
use crate::netns_lock::NamespaceLock;
use crate::{netns, privileges};

/// Which namespace to work in.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// The command line's: `--netns` when given, else the current namespace; the machine's
    /// own only with `--allow-host-netns`.
    Cli {
        netns: Option<&'a Path>,
        allow_host: bool,
    },
    /// A CNI verb's `CNI_NETNS`: always entered, and refused when it is the machine's own
    /// namespace or the one the runtime runs plugins in.
    Container(&'a Path),
}

/// Whether the work needs this namespace to itself.
#[derive(Debug, Clone, Copy)]
pub enum Turn<'a> {
    /// Reads only (status, verify, CNI CHECK, a dry run): no lock.
    Shared,
    /// Changes rules (apply, clean, CNI ADD and DEL): waits for the lock within `budget`.
    Exclusive(&'a TimeBudget),
}

/// In position: the namespace entered, privileges reduced, the lock held while this lives.
#[derive(Debug)]
pub struct Entered {
    _lock: Option<NamespaceLock>,
}

impl Entered {
    /// The namespace's lock, to be released by whoever takes it (dropping it releases the
    /// namespace): `apply --verify` releases it beside verify's own teardown, as each
    /// release waits for a kernel grace period of its own.
    pub fn take_lock(&mut self) -> Option<NamespaceLock> {
        self._lock.take()
    }
}

/// Why the target could not be entered.
#[derive(Debug)]
pub enum EnterError {
    /// `CNI_NETNS` is the machine's namespace or the one the runtime runs plugins in (DEL
    /// treats that as nothing to remove).
    NotAContainer(String),
    Failed(Error),
}

impl From<Error> for EnterError {
    fn from(e: Error) -> Self {
        EnterError::Failed(e)
    }
}

impl From<EnterError> for Error {
    fn from(e: EnterError) -> Self {
        match e {
            EnterError::NotAContainer(why) => Error::Environment(why),
            EnterError::Failed(e) => e,
        }
    }
}

/// Moves this (only) thread into `target`, keeps only `keep` (after checking them, for
/// `purpose`), and takes the namespace's lock for an exclusive `turn`.
pub fn enter(
    target: Target<'_>,
    keep: &[Capability],
    purpose: &str,
    turn: Turn<'_>,
) -> std::result::Result<Entered, EnterError> {
    match target {
        Target::Cli { netns, allow_host } => {
            if let Some(path) = netns {
                privileges::require(&[Capability::CAP_SYS_ADMIN], "entering --netns")?;
                netns::enter(path)?;
            }
            netns::guard_against_host(allow_host)?;
        }
        Target::Container(path) => enter_container(path)?,
    }
    privileges::require(keep, purpose)?;
    privileges::drop_all_except(keep)?;
    let lock = match turn {
        Turn::Shared => None,
        Turn::Exclusive(budget) => Some(NamespaceLock::acquire(budget)?),
    };
    Ok(Entered { _lock: lock })
}

/// Enters `CNI_NETNS`, refusing a namespace that is not a container's.
fn enter_container(path: &Path) -> std::result::Result<(), EnterError> {
    privileges::require(&[Capability::CAP_SYS_ADMIN], "entering CNI_NETNS")?;
    let runtime_namespace = netns::current_inode()?;
    netns::enter(path)?;
    let here = netns::current_inode()?;
    if netns::is_initial_namespace(here) {
        return Err(EnterError::NotAContainer(format!(
            "CNI_NETNS {} is the machine's own network namespace, not a container's",
            path.display()
        )));
    }
    if here == runtime_namespace {
        return Err(EnterError::NotAContainer(format!(
            "CNI_NETNS {} is the namespace the runtime runs meshinit in, not a container's",
            path.display()
        )));
    }
    // The library's own guard too, so CNI mode can never be the one path that skips it.
    netns::guard_against_host(false)?;
    Ok(())
}

/// A result of [`enter`] where only [`Error`] is wanted.
pub fn entered(result: std::result::Result<Entered, EnterError>) -> Result<Entered> {
    result.map_err(Error::from)
}
