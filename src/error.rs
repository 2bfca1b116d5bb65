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
        let property = name(&self.property);
        match &self.value {
            Some(v) => write!(f, "{property}: {}: {}", quote(v), self.message),
            None => write!(f, "{property}: {}", self.message),
        }
    }
}

/// The longest part of a user value quoted in a message, in bytes.
pub const QUOTED_VALUE_LIMIT: usize = 160;

/// Quotes a user value for a message, escaping control characters so a newline in the input
/// shows up as `\n` instead of breaking the log line, and cutting a long value to a readable
/// length (saying how much was left out).
pub fn quote(value: &str) -> String {
    if value.len() <= QUOTED_VALUE_LIMIT {
        return format!("{value:?}");
    }
    let mut cut = QUOTED_VALUE_LIMIT;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} more bytes)", &value[..cut], value.len() - cut)
}

/// A property name for a message: as is when it is a plain name, quoted (escaped, cut)
/// when it is not, since unknown names come straight from the input.
fn name(property: &str) -> std::borrow::Cow<'_, str> {
    let plain = property.len() <= QUOTED_VALUE_LIMIT
        && property
            .bytes()
            .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
    if plain {
        property.into()
    } else {
        quote(property).into()
    }
}

/// At most this many problems are listed; the rest are counted.
pub const LISTED_PROBLEMS: usize = 20;

/// The problems as lines, the first [`LISTED_PROBLEMS`] in full and a count of the rest.
pub fn problem_lines(errors: &[ConfigError]) -> Vec<String> {
    let mut lines: Vec<String> = errors
        .iter()
        .take(LISTED_PROBLEMS)
        .map(ToString::to_string)
        .collect();
    if errors.len() > LISTED_PROBLEMS {
        lines.push(format!(
            "... and {} more problems",
            errors.len() - LISTED_PROBLEMS
        ));
    }
    lines
}

/// All errors that can end a meshinit command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {}", join_config_errors(.0))]
    Config(Vec<ConfigError>),

    /// A command-line value that is not a configuration property is wrong (e.g. the
    /// connection `explain` is asked about).
    #[error("invalid usage: {}", join_config_errors(.0))]
    Usage(Vec<ConfigError>),

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
        backend: crate::backend_kind::BackendKind,
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

    /// The kernel refused or garbled a netlink request of the native backend.
    #[error("nf_tables: {0}")]
    Kernel(String),

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
    let lines = problem_lines(errors);
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
            Error::Config(_) | Error::Usage(_) => exit_code::INVALID_CONFIG,
            Error::Privileges(_) => exit_code::MISSING_PRIVILEGES,
            Error::Environment(_)
            | Error::BackendNotInstalled(_)
            | Error::BackendUnusable { .. } => exit_code::ENVIRONMENT,
            Error::Busy(_) => exit_code::BUSY,
            Error::CommandFailed { .. }
            | Error::LockTimeout { .. }
            | Error::Timeout { .. }
            | Error::Kernel(_)
            | Error::Io { .. }
            | Error::Other(_) => exit_code::FAILURE,
        }
    }

    /// The CNI error code (SPEC "Error codes"): 7 invalid network config, 4 invalid
    /// environment variables, 100+ ours (documented in docs/cni.md).
    pub fn cni_code(&self) -> u32 {
        match self {
            Error::Config(_) | Error::Usage(_) => 7,
            Error::Privileges(_) => 101,
            Error::Environment(_)
            | Error::BackendNotInstalled(_)
            | Error::BackendUnusable { .. } => 102,
            Error::CommandFailed { .. }
            | Error::LockTimeout { .. }
            | Error::Timeout { .. }
            | Error::Kernel(_) => 103,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_on_a_character_boundary_and_counted() {
        let value = "é".repeat(200);
        let quoted = quote(&value);
        assert!(quoted.ends_with("... (240 more bytes)"), "{quoted}");
        assert_eq!(quote("80\n"), "\"80\\n\"");
    }

    #[test]
    fn names_from_the_input_are_quoted_unless_plain() {
        let e = ConfigError::new("CNI_ARGS AppPorts", Some("x"), "bad");
        assert_eq!(e.to_string(), "CNI_ARGS AppPorts: \"x\": bad");
        let e = ConfigError::new("App\nPorts", None, "unknown property");
        assert_eq!(e.to_string(), "\"App\\nPorts\": unknown property");
    }

    #[test]
    fn problems_past_twenty_are_counted() {
        let errors: Vec<ConfigError> = (0..25)
            .map(|i| ConfigError::new(format!("P{i}"), None, "bad"))
            .collect();
        let lines = problem_lines(&errors);
        assert_eq!(lines.len(), 21);
        assert_eq!(lines[20], "... and 5 more problems");
    }
}
