//! CNI plugin mode: a chained plugin that is a drop-in replacement for the App Mesh CNI
//! plugin (`aws-appmesh`): the same network configuration keys (`ignoredUID`,
//! `ignoredGID`, `proxyIngressPort`, `proxyEgressPort`, `appPorts`, `egressIgnoredPorts`,
//! `egressIgnoredIPs`, `enableIPv6`) and the same rules, installed idempotently in one
//! transaction per family.
//!
//! Selected when `CNI_COMMAND` is set, or with `meshinit cni`. The runtime runs the plugin
//! in its own namespace with the container's in `CNI_NETNS`; the configuration comes on
//! standard input, the result or error object goes to standard output, logs to standard
//! error. Specification versions 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0.
//!
//! | Verb    | What meshinit does |
//! |---------|--------------------|
//! | ADD     | enters `CNI_NETNS`, converges the rules (as `meshinit apply`), prints `prevResult` converted to the configuration's version, or an empty result |
//! | DEL     | removes every `APPMESH_*` chain, jump and set (as `meshinit clean`); succeeds when `CNI_NETNS` is empty, missing or gone, when it is not a container's namespace (ADD never installs there), or when the rules are already gone |
//! | CHECK   | fails with code 100 when the installed rules differ from the configuration (0.4.0+) |
//! | STATUS  | succeeds when the privileges ADD needs are there and an iptables backend runs (only `--version`: the runtime's namespace is not touched), else code 50 (1.1.0+) |
//! | GC      | succeeds: nothing of meshinit's outlives a container's namespace (1.1.0+) |
//! | VERSION | lists the supported versions |
//!
//! # Proof per pod
//!
//! `"verify": true` in the network configuration makes ADD, once the rules are in place,
//! and CHECK, once they match, prove them with verify's probes in the pod's namespace (as
//! `meshinit verify`, about 25 ms); anything but a pass fails the verb with code 104 or 105.
//!
//! # Per-pod settings
//!
//! Each network configuration key can be overridden per attachment, lowest to highest
//! precedence: the network configuration, then `CNI_ARGS`, then `runtimeConfig`.
//! - `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`; a key is a network configuration key
//!   in any letter case, so the ECS property names work too
//!   (`IgnoreUnknown=1;IgnoredUID=1337;ProxyEgressPort=15001;AppPorts=8080,8081`). Lists
//!   are comma-separated; `enableIPv6` takes `true`/`false` (or `auto`/`on`/`off`). As the
//!   CNI conventions say, a key given twice is an error, and so is a key that is not ours
//!   unless `IgnoreUnknown=1` is among the pairs; the Kubernetes keys (`K8S_POD_NAME`...)
//!   are known.
//! - `runtimeConfig`: the network configuration keys with the same JSON types
//!   (`{"appPorts": ["8080"], "proxyEgressPort": "15001"}`), filled by a runtime for the
//!   capabilities the configuration declares (`"capabilities": {"appPorts": true}`). When
//!   the request still carries `capabilities`, keys of undeclared ones are ignored (with a
//!   warning). Other capabilities' keys are not ours.
//!
//! # Kubernetes per-pod mode
//!
//! An entry declaring `"capabilities": {"io.kubernetes.cri.pod-annotations": true}` meshes
//! only pods annotated `appmesh.k8s.aws/appmeshCNI: enabled`, with their App Mesh
//! annotations over its keys, and leaves every other pod alone without entering its
//! namespace (`pod`).
//!
//! # ECS agent probes
//!
//! `--capabilities` and `--version` answer the JSON the ECS agent parses (`probes`).
//!
//! # Error codes
//!
//! Errors are `{"cniVersion", "code", "msg", "details"}` on standard output with exit
//! status 1.
//!
//! | Code | Meaning |
//! |------|---------|
//! | 1    | incompatible CNI version: `cniVersion` missing or not supported; CHECK below 0.4.0; STATUS or GC below 1.1.0; a `prevResult` of an unsupported version |
//! | 2    | unsupported field: a key of the network configuration meshinit does not know (named, with its value and the nearest known key) |
//! | 4    | invalid environment variables: `CNI_COMMAND` missing or unknown, `CNI_CONTAINERID`/`CNI_NETNS`/`CNI_IFNAME` missing or malformed, a variable not UTF-8, `CNI_ARGS` not `KEY=VALUE;...`, a key twice, or a key not ours without `IgnoreUnknown=1` (each named) |
//! | 5    | I/O failure reading standard input |
//! | 6    | the configuration or `prevResult` cannot be decoded (larger than 16 MiB, not UTF-8, a byte order mark, not JSON, not an object, wrong types) |
//! | 7    | invalid network configuration: a value is wrong or missing (the key is named: `proxyEgressPort`, `CNI_ARGS AppPorts`, `runtimeConfig.appPorts`); nothing was touched |
//! | 50   | STATUS: the plugin cannot service ADD (privileges or iptables missing) |
//! | 100  | CHECK: the installed rules differ from the configuration (details list each difference) |
//! | 104  | ADD or CHECK with `"verify": true`: verify found redirection broken (details: verify's JSON report) |
//! | 105  | ADD or CHECK with `"verify": true`: verify could not prove the rules (details: verify's JSON report) |
//! | 101  | missing privileges (CAP_SYS_ADMIN to enter `CNI_NETNS`, CAP_NET_ADMIN and CAP_NET_RAW for iptables) |
//! | 102  | environment not usable: `CNI_NETNS` cannot be entered, is the machine's own namespace or the runtime's, iptables missing, IPv6 required but absent |
//! | 103  | `iptables-restore` or `ipset` failed (its message is quoted) |
//! | 999  | any other failure |

pub(crate) mod attachment;
pub mod install;
pub mod pod;
pub mod probes;
mod protocol;
mod result;
mod verbs;
mod version;

use tracing::error;

use protocol::{CniError, Invocation, declared_version, print_stdout, read_stdin};

/// Runs the CNI protocol on the process environment and standard input/output; returns the
/// exit code.
pub fn run() -> i32 {
    let invocation = match Invocation::from_env(|name| std::env::var_os(name)) {
        Ok(invocation) => invocation,
        Err(e) => return fail(&e, None),
    };
    let stdin = match read_stdin(invocation.command) {
        Ok(text) => text,
        Err(e) => return fail(&e, None),
    };
    match verbs::execute(&invocation, &stdin) {
        Ok(Some(output)) => {
            print_stdout(&output);
            0
        }
        Ok(None) => 0,
        Err(e) => fail(&e, declared_version(&stdin)),
    }
}

/// Reports `e` to the runtime (standard output) and the log (standard error).
fn fail(e: &CniError, cni_version: Option<String>) -> i32 {
    error!("{e}");
    let cni_version = cni_version.unwrap_or_else(|| version::LATEST.to_string());
    print_stdout(&e.to_json(&cni_version));
    1
}
