//! `meshinit apply` where it cannot or must not go on: bad configuration, a failed restore,
//! no IPv6, missing tools or capabilities, the machine's own namespace, an unusable
//! `--netns` path. Each exits with its documented code and leaves the rules as they were.
//! Needs root (skips outside CI without it; fails in CI).

mod common;

use std::process::Command;

use common::scene::*;
use common::*;

#[test]
fn bad_configuration_exits_2_and_leaves_the_rules_untouched() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("badcfg");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG]), 0);
    let before = ours_anywhere(&ns);
    assert!(!before.is_empty(), "the first apply installed nothing");
    for args in [
        vec!["apply", "--ignored-uid", "1337"],
        vec![
            "apply",
            "--ignored-uid",
            "x",
            "--proxy-egress-port",
            "15001",
        ],
        vec![
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "15001",
            "--app-ports",
            "80",
        ],
        vec!["apply", ECS_CONFIG, "--proxy-ingress-port", "15001"],
        vec![
            "apply",
            ECS_CONFIG,
            "--egress-ignored-ips",
            "10.0.0.1\n-A OUTPUT -j ACCEPT",
        ],
        vec!["clean", "--backend", "bogus"],
    ] {
        let output = meshinit(&ns, &args);
        assert_exit(&output, 2);
        assert_eq!(before, ours_anywhere(&ns), "{args:?} changed the rules");
    }
}

#[test]
fn a_failed_restore_leaves_the_rules_exactly_as_before() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("lockfail");
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--backend", "legacy"]),
        0,
    );
    let before = nat_state(&ns, "legacy");
    // Hold a private xtables lock so the legacy restore really fails, like under contention.
    let lock = XtablesLockHolder::hold("failedrestore");
    let output = meshinit_with_env(
        &ns,
        &[
            "apply",
            "--ignored-uid",
            "1337",
            "--proxy-egress-port",
            "16001",
            "--backend",
            "legacy",
            "--lock-timeout",
            "1s",
        ],
        &[("XTABLES_LOCKFILE", lock.lockfile())],
    );
    drop(lock);
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(err.contains("iptables-legacy-restore failed"), "{err}");
    assert!(
        err.contains("xtables lock"),
        "the restore's stderr is quoted: {err}"
    );
    assert!(
        err.contains("waiting"),
        "says that it waits for the lock: {err}"
    );
    assert_eq!(before, nat_state(&ns, "legacy"));
}

#[test]
fn ipv6_disabled_namespace_auto_continues_with_ipv4_and_on_fails() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("noipv6");
    ns.run_checked("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    let output = meshinit(&ns, &["apply", ECS_CONFIG]);
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("programming IPv4 only"),
        "{}",
        stderr(&output)
    );
    let on = meshinit(&ns, &["apply", ECS_CONFIG, "--ipv6", "on"]);
    assert_exit(&on, 4);
    assert!(stderr(&on).contains("IPv6 is required"), "{}", stderr(&on));
}

#[test]
fn missing_iptables_exits_4_and_missing_capability_exits_3() {
    if !require_root() {
        return;
    }
    let ns = TestNetns::new("env");
    let output = ns
        .command("env")
        .args([
            "PATH=/nonexistent",
            MESHINIT,
            "apply",
            ECS_CONFIG,
            "--backend",
            "iptables-nft",
        ])
        .output()
        .unwrap();
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("is not installed"),
        "{}",
        stderr(&output)
    );
    // Without any iptables program, `auto` uses nf_tables over netlink, which needs none.
    let output = ns
        .command("env")
        .args(["PATH=/nonexistent", MESHINIT, "apply", ECS_CONFIG])
        .output()
        .unwrap();
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("backend=nftables"),
        "{}",
        stderr(&output)
    );
    assert!(
        ns.run_checked("nft", &["list", "table", "inet", "meshinit"])
            .contains("redirect")
    );

    let before = ours_anywhere(&ns);
    let output = ns
        .command("setpriv")
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            MESHINIT,
            "apply",
            ECS_CONFIG,
        ])
        .output()
        .unwrap();
    assert_exit(&output, 3);
    let err = stderr(&output);
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("securityContext"),
        "{err}"
    );
    assert_eq!(
        before,
        ours_anywhere(&ns),
        "a run without CAP_NET_ADMIN changed rules"
    );
}

#[test]
fn refuses_the_machines_own_namespace() {
    if !require_root() {
        return;
    }
    // Run in this machine's namespace, but with an iptables backend and no iptables
    // reachable on PATH: even if the guard were broken nothing could be installed here (the
    // native backend needs no program, so `auto` is never run here), and the message tells
    // them apart.
    let output = Command::new(MESHINIT)
        .args(["apply", ECS_CONFIG, "--backend", "iptables-nft"])
        .env("PATH", "/nonexistent-meshinit-test")
        .output()
        .unwrap();
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("machine's own network namespace"),
        "{}",
        stderr(&output)
    );
    // A namespace made by `ip netns` is not refused.
    let ns = TestNetns::new("guard");
    assert_exit(&meshinit(&ns, &["apply", ECS_CONFIG, "--dry-run"]), 0);
}

#[test]
fn an_unusable_netns_path_exits_4() {
    if !require_root() {
        return;
    }
    for path in ["/var/run/netns/meshinit-does-not-exist", "/etc/hostname"] {
        let output = Command::new(MESHINIT)
            .args(["apply", ECS_CONFIG, "--netns", path])
            .output()
            .unwrap();
        assert_exit(&output, 4);
        assert!(stderr(&output).contains(path), "{}", stderr(&output));
    }
}

/// Starts `args` in `ns` as the unprivileged user nobody, with no capability at all.
fn unprivileged(ns: &TestNetns, args: &[&str]) -> std::process::Child {
    ns.command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("setpriv starts")
}

/// A child process of this test, inside `ns` as the user nobody with no capability, that
/// holds the abstract socket earlier meshinit versions locked with; killed on drop. Made by
/// fork and setuid rather than a script, so it needs no interpreter (the VM has none).
struct Squatter(nix::unistd::Pid);

impl Squatter {
    fn bind_lock_socket_as_nobody(ns: &TestNetns) -> Squatter {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};
        use nix::unistd::{ForkResult, Gid, Uid, fork, pipe, read, write};
        use std::os::fd::AsRawFd;
        let (ready_read, ready_write) = pipe().expect("pipe");
        // SAFETY: the child only makes system calls and exits; it never returns into the
        // test harness or touches its locks.
        let pid = ns.run_inside(|| match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let bound = nix::unistd::setgroups(&[]).is_ok()
                    && nix::unistd::setgid(Gid::from_raw(65534)).is_ok()
                    && nix::unistd::setuid(Uid::from_raw(65534)).is_ok()
                    && caps::read(None, caps::CapSet::Effective).is_ok_and(|c| c.is_empty())
                    && socket(
                        AddressFamily::Unix,
                        SockType::Stream,
                        SockFlag::empty(),
                        None,
                    )
                    .is_ok_and(|fd| {
                        let addr = UnixAddr::new_abstract(b"meshinit/netns-lock");
                        let ok = addr.is_ok_and(|a| bind(fd.as_raw_fd(), &a).is_ok());
                        // Kept open for the child's life: the binding is the squat.
                        std::mem::forget(fd);
                        ok
                    });
                let _ = write(&ready_write, if bound { b"y" } else { b"n" });
                loop {
                    nix::unistd::pause();
                }
            }
            ForkResult::Parent { child } => child,
        });
        drop(ready_write);
        let squatter = Squatter(pid);
        let mut answer = [0u8; 1];
        let got = read(&ready_read, &mut answer).expect("read the squatter's answer");
        assert_eq!(
            &answer[..got],
            b"y",
            "the squatter could not bind the socket as nobody without capabilities"
        );
        squatter
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.0, None);
    }
}

#[test]
fn an_unprivileged_process_can_neither_block_nor_take_the_namespace_lock() {
    if !require_root() {
        return;
    }
    use std::io::Write;
    let ns = TestNetns::new("lockjam");
    // The abstract socket earlier versions locked with alone, bound by nobody.
    let squatter = Squatter::bind_lock_socket_as_nobody(&ns);
    for backend in ["nftables", "iptables-nft", "iptables-legacy"] {
        let output = meshinit(
            &ns,
            &[
                "apply",
                ECS_CONFIG,
                "--backend",
                backend,
                // A squatter that blocked would make this exit 7 after the timeout; the
                // timeout leaves room for the global xtables lock, which this binary's other
                // tests take meanwhile (slow under an emulated CPU).
                "--lock-timeout",
                "30s",
            ],
        );
        assert_exit(&output, 0);
        assert_exit(&meshinit(&ns, &["clean", "--lock-timeout", "30s"]), 0);
    }
    // Nor can it take the lock table: nf_tables needs CAP_NET_ADMIN.
    let mut fake = unprivileged(
        &ns,
        &["nft", "add table inet meshinit_lock { flags owner; }"],
    );
    drop(fake.stdin.take());
    assert!(!fake.wait().unwrap().success());
    drop(squatter);

    // A privileged holder of the lock table (as another meshinit) is waited for: exit 7
    // naming it, and nothing changed.
    let mut holder = ns
        .command("nft")
        .arg("-i")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut holder_stdin = holder.stdin.take().unwrap();
    writeln!(
        holder_stdin,
        "add table inet meshinit_lock {{ flags owner; }}"
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ns
        .run_checked("nft", &["list", "tables"])
        .contains("meshinit_lock")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "nft never made the lock table"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let output = meshinit(&ns, &["apply", ECS_CONFIG, "--lock-timeout", "300ms"]);
    assert_exit(&output, 7);
    assert!(
        stderr(&output).contains("meshinit_lock"),
        "{}",
        stderr(&output)
    );
    assert!(ours_anywhere(&ns).is_empty(), "a busy run changed nothing");
    drop(holder_stdin);
    holder.wait().unwrap();
    assert_exit(
        &meshinit(&ns, &["apply", ECS_CONFIG, "--lock-timeout", "1s"]),
        0,
    );
    assert!(
        !ns.run_checked("nft", &["list", "tables"])
            .contains("meshinit_lock"),
        "the lock table goes with its holder"
    );
}
