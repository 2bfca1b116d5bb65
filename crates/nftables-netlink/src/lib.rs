//! An nf_tables client over netlink (`NETLINK_NETFILTER`), in pure Rust: one table as typed
//! values ([`model`]), sent to the kernel in one transaction and read back into the same
//! values, so "installed == desired" is a value comparison. No `nft` program and no C
//! library (no libnftnl, no libmnl).
//!
//! Crate choice: `netlink-packet-netfilter` (MIT, the rust-netlink family of
//! `netlink-packet-core`/`netlink-sys`) types the nf_tables messages (tables, chains, rules,
//! sets, elements, generation) and most expressions (meta, cmp, payload, bitwise, lookup,
//! immediate), both ways; only `fib`, `redir` and `counter` are written here from their
//! uapi attribute numbers. `netlink-bindings` (generated from the kernel YAML specs) types
//! `fib` and `counter` but not `redir` either, and brings its own socket stack. `rustables`
//! is GPL, `nftnl` needs libnftnl/libmnl.
//!
//! - [`model`]: a table as values (sets, chains, rules, the expressions modelled).
//! - [`encode`]/[`decode`]: model <-> nf_tables messages; [`batch`]: a transaction.
//! - [`connection`]: read, commit (compare, replace atomically, retry on a stale
//!   generation id), delete, and raw batches for other tables.
//! - [`text`]: a table as lines in `nft`'s words, and a diff of two such listings.

pub mod batch;
pub mod connection;
pub mod decode;
pub mod encode;
pub mod error;
pub mod model;
mod socket;
pub mod text;

pub use batch::{Batch, TableFamily};
pub use connection::{BatchOutcome, Change, CommitReport, Deletion, NftConnection, Snapshot};
pub use error::NftError;
pub use model::Table;
