//! The native nf_tables backend core (`meshinit::nftables`) against the real kernel, in
//! namespaces the tests create: the `nft` program is the independent observer, real
//! connections prove the semantics. Needs root (skips outside CI without it; fails in CI).

mod common;

use std::net::SocketAddr;

use common::*;
use meshinit::config::{ProxyConfig, sources::env::parse_env, validate};
use meshinit::nftables::{ActiveFamilies, NftConnection, Table, plan_table};

const SEED_ENV: &str = "APPMESH_IGNORE_UID=1337
APPMESH_ENVOY_INGRESS_PORT=15000
APPMESH_ENVOY_EGRESS_PORT=15001
APPMESH_APP_PORTS=9080
APPMESH_ENABLE_IPV6=1";

fn config_from_env(text: &str) -> ProxyConfig {
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
    validate(&parse_env(vars)).expect("valid config").0
}

fn commit_in(ns: &TestNetns, table: &Table) -> meshinit::nftables::CommitReport {
    ns.run_inside(|| {
        NftConnection::open()
            .and_then(|mut c| c.commit(table))
            .unwrap_or_else(|e| panic!("commit failed: {e}"))
    })
}

#[test]
fn smoke() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("nft");
    let table = plan_table(&config_from_env(SEED_ENV), ActiveFamilies::Both);
    let report = commit_in(&ns, &table);
    eprintln!("{report:?}");
    eprintln!("{}", ns.run_checked("nft", &["list", "ruleset"]));
    let read = ns.run_inside(|| {
        NftConnection::open()
            .unwrap()
            .read_table("meshinit")
            .unwrap()
    });
    assert_eq!(read.table.as_ref(), Some(&table));
    let _ = SocketAddr::from(([127, 0, 0, 1], 1));
}
