//! The real AWS plugins meshinit replaces (`aws-appmesh`, built from AWS's source), found
//! through `MESHINIT_PEERS_DIR` (`.ci/run` points it at `../shared/peers`).

use std::path::PathBuf;

/// The environment variable naming the directory that holds the AWS plugins.
pub const PEERS_DIR_VAR: &str = "MESHINIT_PEERS_DIR";

/// The AWS plugin `name` (e.g. `aws-appmesh`), or `None` after saying loudly why the calling
/// test is skipped. With `CI=true` a missing plugin fails the test instead: a parity test
/// that silently skips proves nothing.
pub fn peer_plugin(name: &str) -> Option<PathBuf> {
    use std::io::Write;
    let test_name = std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string();
    let why = match std::env::var_os(PEERS_DIR_VAR) {
        None => format!("{PEERS_DIR_VAR} is not set (it names the directory holding {name})"),
        Some(dir) => {
            let path = PathBuf::from(dir).join(name);
            if path.is_file() {
                return Some(path);
            }
            format!("{} does not exist", path.display())
        }
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test_name}: {why}, and CI=true forbids skipping a parity test");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test_name}: {why}; e.g. {PEERS_DIR_VAR}=/work/shared/peers cargo test"
    );
    None
}
