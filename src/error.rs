//! The error type of the library. Each variant knows its process exit code and its CNI
//! error code, so the mapping lives in one place.

use std::fmt;

/// Exit codes documented in the README.
pub mod exit_code {
    /// Anything not covered below.
    pub const FAILURE: i32 = 1;
    /// Invalid configuration or command-line usage.
    pub const INVALID_CONFIG: i32 = 2;
    /// A capability the job needs is not effective.
    pub const MISSING_PRIVILEGES: i32 = 3;
    /// The environment cannot be used (no iptables, host namespace, IPv6 required but absent...).
    pub const ENVIRONMENT: i32 = 4;
    /// `verify`: the rules are installed but redirection does not work as configured.
    pub const VERIFY_FAILED: i32 = 5;
    /// `verify`: the checks themselves could not run (proxy port taken, namespace unusable).
    pub const VERIFY_COULD_NOT_RUN: i32 = 6;
    /// Another meshinit kept this namespace's lock for longer than `--lock-timeout`; nothing
    /// was changed, and running again later is safe.
    pub const BUSY: i32 = 7;
}

/// One thing wrong with the configuration: which property (as the user spelled it in that
/// source), the value, and what would be right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The property as named by its source (`AppPorts`, `appPorts`, `APPMESH_APP_PORTS`,
    /// `--app-ports`), or the document when the problem is not one property.
    pub property: String,
    /// The offending value, verbatim (empty when the problem is a missing property).
    pub value: Option<String>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigError {
    pub fn new(
        property: impl Into<String>,
        value: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            property: property.into(),
            value: value.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}: {}: {}", self.property, quote(v), self.message),
            None => write!(f, "{}: {}", self.property, self.message),
        }
    }
}

/// Quotes a user value for a message, escaping control characters so a newline in the input
/// shows up as `\n` instead of breaking the log line.
pub fn quote(value: &str) -> String {
    format!("{value:?}")
}

/// All errors that can end a meshinit command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {}", join_config_errors(.0))]
    Config(Vec<ConfigError>),

    #[error("missing privileges: {0}")]
    Privileges(String),

    #[error("environment not usable: {0}")]
    Environment(String),

    /// A backend's programs are not installed.
    #[error("environment not usable: {0}")]
    BackendNotInstalled(String),

    /// The kernel refused a backend on first use (e.g. no nf_tables).
    #[error("environment not usable: {backend} cannot be used here: {reason}")]
    BackendUnusable {
        backend: crate::backend::BackendKind,
        reason: String,
    },

    /// A child process (iptables-restore, ipset) ran and failed; its stderr is quoted.
    #[error("{program} failed ({status}): {stderr}")]
    CommandFailed {
        program: String,
        status: String,
        stderr: String,
    },

    /// A legacy iptables program could not get the xtables lock in time.
    #[error("{program} failed ({status}): {stderr}")]
    LockTimeout {
        program: String,
        status: String,
        stderr: String,
    },

    /// A child program was still running at the end of the run's time budget; it was killed.
    #[error(
        "{program} did not finish within {limit}; it was killed and nothing it was doing took effect"
    )]
    Timeout {
        program: String,
        limit: &'static str,
    },

    /// Another meshinit holds this network namespace's lock.
    #[error("busy: {0}")]
    Busy(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Other(String),
}

fn join_config_errors(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    if lines.len() == 1 {
        lines[0].clone()
    } else {
        format!("\n  {}", lines.join("\n  "))
    }
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit_code::INVALID_CONFIG,
            Error::Privileges(_) => exit_code::MISSING_PRIVILEGES,
            Error::Environment(_)
            | Error::BackendNotInstalled(_)
            | Error::BackendUnusable { .. } => exit_code::ENVIRONMENT,
            Error::Busy(_) => exit_code::BUSY,
            Error::CommandFailed { .. }
            | Error::LockTimeout { .. }
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::Other(_) => exit_code::FAILURE,
        }
    }

    /// The CNI error code (SPEC "Error codes"): 7 invalid network config, 4 invalid
    /// environment variables, 100+ ours (documented in the README).
    pub fn cni_code(&self) -> u32 {
        match self {
            Error::Config(_) => 7,
            Error::Privileges(_) => 101,
            Error::Environment(_)
            | Error::BackendNotInstalled(_)
            | Error::BackendUnusable { .. } => 102,
            Error::CommandFailed { .. } | Error::LockTimeout { .. } | Error::Timeout { .. } => 103,
            // The specification's "try again later".
            Error::Busy(_) => 11,
            Error::Io { .. } | Error::Other(_) => 999,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(vec![e])
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
