//! Integration-test harness for meshinit: throwaway network namespaces, listeners that
//! report where a connection landed, and a client that can connect as another UID/GID.
//!
//! Use it from an integration test with `mod common;`. Everything the harness touches
//! lives in namespaces it creates (named `mshi-…`) and deletes on drop, so tests can run
//! in parallel and never change the machine's own network namespace.
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[test]
//! fn egress_goes_through_proxy() {
//!     if !require_root() { return; }
//!     let net = NetnsPair::new();
//!     net.peer.add_address("203.0.113.7".parse().unwrap());
//!     let remote = net.peer.listen(80);
//!     let proxy = net.app.listen(15001);
//!     net.app.iptables("iptables-nft",
//!         "-t nat -A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001");
//!     let dest = "203.0.113.7:80".parse().unwrap();
//!     assert_redirected(&net.app.connect(dest, None, DEFAULT_CONNECT_TIMEOUT), &proxy, dest);
//!     assert_direct(&net.app.connect(dest, Some((1337, 1337)), DEFAULT_CONNECT_TIMEOUT), &remote);
//! }
//! ```

// Each integration-test binary compiles this module separately and uses only part of it.
#![allow(dead_code, unused_imports)]

mod backends;
mod cli;
mod client;
mod fake_tools;
mod listener;
pub mod native_golden;
mod netns;
mod path_without;
mod peers;
/// The traffic fixture of the `apply_*` tests, imported as `common::scene::*` and kept out
/// of the glob below: other test files define their own `Scene`, `PROXY_UID`, `addr`.
pub mod scene;

pub use backends::*;
pub use cli::*;
pub use client::{
    ConnectAttempt, ConnectFailure, ConnectOutcome, DEFAULT_CONNECT_TIMEOUT, Landing,
    assert_direct, assert_failed, assert_redirected, assert_refused,
};
pub use fake_tools::{FakeBehavior, FakeTools};
pub use listener::Listener;
pub use netns::{
    APP_IFACE, APP_V4, APP_V6, INIT_NET_NS_INODE, NETNS_DIR, NETNS_PREFIX, NetnsPair, PEER_IFACE,
    PEER_V4, PEER_V6, TestNetns, is_machines_namespace, netns_exists,
};
pub use path_without::PathWithout;
pub use peers::{PEERS_DIR_VAR, peer_plugin};

/// Whether this process may create namespaces and program netfilter (that needs root).
///
/// Returns `false` after printing why the calling test is skipped when not root, so a
/// developer's unprivileged `cargo test` still passes; with `CI=true` it panics instead,
/// because a CI job that silently skips every kernel test would prove nothing.
pub fn require_root() -> bool {
    use std::io::Write;
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let test_name = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    let why = "needs root (creates network namespaces and installs iptables rules in them)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test_name} {why}, and CI=true forbids skipping it");
    }
    // Straight to the stderr handle, not eprintln!: libtest captures eprintln! output of
    // passing tests, and a skip nobody sees is as bad as a silent pass.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test_name}: {why}; run as root, e.g. `sudo -E cargo test`"
    );
    false
}

/// Waits until `condition` holds, looking again every few milliseconds; panics naming
/// `what` once `bound` has passed (a condition that never comes is a failure, not a hang).
pub fn wait_until(what: &str, bound: std::time::Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + bound;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {bound:?} waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The seed of generated test cases. With `CI=true` it is fixed, so CI runs the same cases
/// every time and a red CI means a change broke something; elsewhere each run explores new
/// cases (a failure prints its seed to replay). `PROPTEST_RNG_SEED=N` picks one either way.
pub fn proptest_seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    let chosen = std::env::var("PROPTEST_RNG_SEED").ok();
    match chosen.and_then(|s| s.parse().ok()) {
        Some(seed) => RngSeed::Fixed(seed),
        None if std::env::var("CI").as_deref() == Ok("true") => RngSeed::Fixed(0x4d45_5348),
        None => RngSeed::Random,
    }
}
