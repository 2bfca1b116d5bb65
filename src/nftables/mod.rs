//! Native nf_tables backend core: meshinit's rules as one `inet meshinit` table, rendered
//! from the rulesets the one model plans, committed over netlink
//! (NETLINK_NETFILTER) in one transaction, read back into the same typed model. No `nft`,
//! `iptables` or `ipset` program and no C library.
//!
//! Crate choice: `netlink-packet-netfilter` (MIT, the rust-netlink family whose
//! `netlink-packet-core`/`netlink-sys` meshinit already uses) types the nf_tables messages
//! (tables, chains, rules, sets, elements, generation) and most expressions (meta, cmp,
//! payload, bitwise, lookup, immediate), both ways; only `fib`, `redir` and `counter` are
//! written here from their uapi attribute numbers. `netlink-bindings` (generated from the
//! kernel YAML specs) types `fib` and `counter` but not `redir` either, and brings its own
//! socket stack (`netlink-socket2`) and ~20k generated lines beside the one already in the
//! tree. `rustables` is GPL, `nftnl` needs libnftnl/libmnl.
//!
//! - [`model`]: the table as values; [`render`]: the model's rulesets -> table (pure).
//! - [`encode`]/[`decode`]: model <-> nf_tables messages; [`batch`]: a transaction.
//! - [`drift`]: installed vs desired in words (status).
//! - [`connection`]: read, commit (compare, replace atomically, retry on a stale
//!   generation id), delete; the building blocks of an iptables-nft migration batch.

pub mod batch;
pub mod connection;
pub mod counters;
pub mod decode;
pub mod drift;
pub mod encode;
pub mod error;
pub mod model;
pub mod render;
mod render_zones;
mod socket;
pub mod text;

pub use batch::{Batch, TableFamily};
pub use connection::{BatchOutcome, Change, CommitReport, Deletion, NftConnection, Snapshot};
pub use drift::describe_drift;
pub use error::NftError;
pub use model::{TABLE_NAME, Table};
pub use render::{ActiveFamilies, plan_table, render_table};
