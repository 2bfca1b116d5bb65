//! Native nf_tables commits, timed: the seed table, long ignore lists as hash and interval
//! sets, and the set layout choice (32,768 separate ports, 100,000 scattered addresses, each
//! as a hash and as an interval set). Per table: the commit into an empty namespace, reading
//! it back, and the unchanged re-commit (a compare only). Moved here from
//! `tests/nftables_native.rs`, where it printed timings from inside the test suite.
//!
//! Every measurement runs on a thread of its own that first enters a new, anonymous network
//! namespace (`unshare(CLONE_NEWNET)`), which disappears with the thread: the machine's own
//! namespace is never touched. Needs root. `scripts/bench.sh` runs it with `--run` and quotes
//! its output; `cargo bench` alone only prints a pointer.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use meshinit::backend::nftables::{ActiveFamilies, TABLE_NAME, plan_table};
use meshinit::config::{IgnoredDestinations, ProxyConfig, sources::env::parse_env, validate};
use nftables_netlink::model::{KeyRange, KeyType, Set};
use nftables_netlink::{Change, NftConnection, Table};

/// The seed configuration of nftables-facts.md.
const SEED_ENV: &str = "APPMESH_IGNORE_UID=1337
APPMESH_ENVOY_INGRESS_PORT=15000
APPMESH_ENVOY_EGRESS_PORT=15001
APPMESH_APP_PORTS=9080
APPMESH_ENABLE_IPV6=1";

fn config_from_env(text: &str) -> Result<ProxyConfig, String> {
    let vars = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.into(), v.into()));
    let raw = parse_env(vars).map_err(|e| format!("{e:?}"))?;
    Ok(validate(&raw).map_err(|e| format!("{e:?}"))?.0)
}

fn scattered_ipv4(count: u32) -> Result<ProxyConfig, String> {
    let mut config = config_from_env(SEED_ENV)?;
    config.egress_ignored_destinations = IgnoredDestinations::from_networks((0..count).map(|i| {
        IpNet::V4(Ipv4Net::new((0x0a00_0000 + i * 7).into(), 32).expect("a /32 is valid"))
    }));
    Ok(config)
}

/// (commit into a fresh namespace, read back, unchanged re-commit), in a namespace of its
/// own that goes with the thread.
fn timed_commit(table: &Table) -> Result<(Duration, Duration, Duration), String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot enter a new network namespace: {e}"))?;
                let connection = || NftConnection::open().map_err(|e| e.to_string());
                let start = Instant::now();
                let report = connection()?.commit(table).map_err(|e| e.to_string())?;
                let committed = start.elapsed();
                if report.change != Change::Created {
                    return Err(format!("expected a new table, got {:?}", report.change));
                }
                let start = Instant::now();
                let read = connection()?
                    .read_table(TABLE_NAME)
                    .map_err(|e| e.to_string())?;
                let read_time = start.elapsed();
                if read.table.as_ref() != Some(table) {
                    return Err("the table read back differs from the one committed".into());
                }
                let start = Instant::now();
                let report = connection()?.commit(table).map_err(|e| e.to_string())?;
                if report.change != Change::Unchanged {
                    return Err(format!("expected no change, got {:?}", report.change));
                }
                Ok((committed, read_time, start.elapsed()))
            })
            .join()
            .map_err(|_| "the measuring thread panicked".to_owned())?
    })
}

fn best_of(runs: usize, table: &Table) -> Result<(Duration, Duration, Duration), String> {
    let mut best = None;
    for _ in 0..runs {
        let timing = timed_commit(table)?;
        best = Some(best.map_or(timing, |b: (Duration, Duration, Duration)| b.min(timing)));
    }
    best.ok_or_else(|| "no run".to_owned())
}

fn run() -> Result<(), String> {
    let seed = plan_table(&config_from_env(SEED_ENV)?, ActiveFamilies::Both);
    println!(
        "seed (commit, read back, unchanged re-commit): {:?}",
        best_of(5, &seed)?
    );
    for count in [10_000, 100_000] {
        let table = plan_table(&scattered_ipv4(count)?, ActiveFamilies::Both);
        println!(
            "{count} ignored /32s (hash set): {:?}",
            timed_commit(&table)?
        );
        let mut config = scattered_ipv4(count)?;
        config
            .egress_ignored_destinations
            .push("192.168.0.0/16".parse().expect("a network"));
        let table = plan_table(&config, ActiveFamilies::Both);
        println!(
            "{count} ignored /32s + one /16 (interval set): {:?}",
            best_of(3, &table)?
        );
    }
    // The layout choice: every other port, and 100,000 scattered addresses, each as a hash
    // set and as an interval set.
    let every_other_port: Vec<KeyRange> =
        (1..=32_768u128).map(|p| KeyRange::single(p * 2)).collect();
    let scattered: Vec<KeyRange> = (0..100_000u128)
        .map(|i| KeyRange::single(0x0a00_0000 + i * 7))
        .collect();
    for (what, key, members) in [
        (
            "32768 separate ports",
            KeyType::InetService,
            &every_other_port,
        ),
        (
            "100000 separate IPv4 addresses",
            KeyType::Ipv4Addr,
            &scattered,
        ),
    ] {
        for interval in [false, true] {
            let set = Set::with_layout("s", key, interval, members.iter().copied());
            let table = Table::new(TABLE_NAME, vec![set], Vec::new());
            println!(
                "{what}, {} set: {:?}",
                if interval { "interval" } else { "hash" },
                timed_commit(&table)?
            );
        }
    }
    let peak = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    println!("process peak RSS ({peak}), desired tables included");
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`: measure only when scripts/bench.sh asks.
    if !std::env::args().any(|a| a == "--run") {
        println!("nft_layouts: run by scripts/bench.sh (as root: `nft_layouts --run`)");
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nft_layouts: {e}");
            ExitCode::FAILURE
        }
    }
}
