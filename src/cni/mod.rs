//! CNI plugin mode (chained plugin, drop-in for aws-appmesh).

/// Runs the CNI protocol on the process environment and standard input/output; returns the
/// exit code.
pub fn run() -> i32 {
    eprintln!("meshinit: CNI mode is not implemented yet");
    1
}
