//! Removing everything of ours from a namespace (`meshinit clean`, CNI DEL): the rules of
//! every backend that holds them first, then our sets, which cannot be destroyed while any
//! rule still uses them. One backend failing does not stop the others' cleanup.

use tracing::error;

use crate::backend::{self, Availability, Backend, BackendChoice, Removal, Scope, TimeBudget};
use crate::error::Result;

/// Removes our rules from the backend `choice` names, or with `auto` from every backend
/// that holds some (rules in any of them still redirect), then our sets.
pub fn clean(choice: BackendChoice, budget: &TimeBudget) -> Result<()> {
    let backends: Vec<Box<dyn Backend>> = match choice {
        BackendChoice::Auto => backend::all(),
        explicit => {
            let chosen = backend::select(explicit, budget)?.backend;
            chosen.available(Availability::Installed)?;
            vec![chosen]
        }
    };
    clean_backends(&backends, budget)
}

/// [`clean`] of `backends`: the rules of each that holds (or may hold) ours, then the sets
/// of each installed one; the first error is returned after all were tried.
pub(super) fn clean_backends(backends: &[Box<dyn Backend>], budget: &TimeBudget) -> Result<()> {
    let mut first_error = None;
    for b in backends {
        match b.read(Scope::Ours, budget) {
            Ok(held) if !held.is_clean() => {}
            Ok(_) => continue,
            // Unreadable is not "nothing of ours": try removing, which says what fails.
            Err(e) => {
                error!(backend = %b.kind(), error = %e, "could not tell whether this backend holds ours; removing anyway");
            }
        }
        if let Err(e) = b.remove(Removal::Rules, budget) {
            error!(backend = %b.kind(), error = %e, "could not clean this backend; going on");
            first_error.get_or_insert(e);
        }
    }
    for b in backends
        .iter()
        .filter(|b| b.available(Availability::Installed).is_ok())
    {
        if let Err(e) = b.remove(Removal::Sets, budget) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
