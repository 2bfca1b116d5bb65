//! The command line: one struct per subcommand, each with an `exec`.

pub mod apply;
pub mod args;
pub mod clean;
pub mod cni;
pub mod explain;
pub mod property_flags;
pub mod render;
pub mod status;
mod target;
pub mod validate;
pub mod verify;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::Result;

/// Exit codes: 0 ok; 1 other failure (for `status`: rules absent or drifted); 2 invalid
/// configuration or usage; 3 missing privileges; 4 environment not usable; 5 `verify`:
/// redirection broken; 6 `verify` could not run.
#[derive(Debug, Parser)]
#[command(
    name = "meshinit",
    version,
    about = "Programs the NAT rules that send a workload's TCP traffic through its service-mesh \
             sidecar (App Mesh compatible), and proves they work.",
    after_help = "Exit codes: 0 ok; 1 failure (status: absent or drifted); 2 invalid \
                  configuration or usage; 3 missing privileges; 4 environment not usable; \
                  5 verify: redirection broken; 6 verify could not run.\n\
                  Run as a CNI plugin when CNI_COMMAND is set (see `meshinit cni --help`)."
)]
pub struct Cli {
    /// Log format on standard error (the level comes from RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MESHINIT_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the iptables-restore payloads the configuration renders (no privileges needed).
    Render(render::RenderArgs),
    /// Install the ruleset in a network namespace: atomic per family, idempotent.
    Apply(apply::ApplyArgs),
    /// Remove every APPMESH_* chain, every jump into one and our ipsets; nothing else.
    Clean(clean::CleanArgs),
    /// Compare the installed rules with the configuration: exit 0 in sync, 1 absent/drifted.
    Status(status::StatusArgs),
    /// Prove with real connections that redirection works as configured.
    Verify(verify::VerifyArgs),
    /// Say which rule decides a connection and why, from the plan (no privileges needed).
    Explain(explain::ExplainArgs),
    /// Run as a CNI plugin (also selected automatically when CNI_COMMAND is set); `cni
    /// install` / `cni uninstall` edit a node's CNI configuration list.
    Cni(cni::CniArgs),
    /// Fail-closed check for a pod meshed by the CNI plugin, as its first init container:
    /// wait (bounded) until its outbound connections are redirected to ProxyEgressPort;
    /// exit 5 if they never are (the pod was created without its rules). No privileges.
    Validate(validate::ValidateArgs),
}

impl Command {
    /// Runs the command; `Ok(code)` is the exit code of a command that ran to its end.
    pub fn exec(self) -> Result<i32> {
        match self {
            Command::Render(args) => args.exec(),
            Command::Apply(args) => args.exec(),
            Command::Clean(args) => args.exec(),
            Command::Status(args) => args.exec(),
            Command::Verify(args) => args.exec(),
            Command::Explain(args) => args.exec(),
            Command::Cni(args) => args.exec(),
            Command::Validate(args) => args.exec(),
        }
    }
}
