//! The CNI execution protocol: the `CNI_*` environment, the network configuration on
//! standard input, and the error object on standard output.

use std::ffi::OsString;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use super::version::{LATEST, SUPPORTED_VERSIONS, SpecVersion};
use crate::config::input::{self, InputError};
use crate::config::sources::json::from_str_unique_keys;
use crate::error::{ConfigError, Error, problem_lines};

/// Error codes. 0-99 are the specification's; 100 and up are meshinit's (see the table in
/// the module documentation of `cni`).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// CHECK: the installed rules are not the ones the configuration asks for.
    pub const RULES_DIFFER: u32 = 100;
    /// ADD or CHECK with `"verify": true`: verify found redirection broken (the report is
    /// in the details).
    pub const VERIFY_FAILED: u32 = 104;
    /// ADD or CHECK with `"verify": true`: verify could not run (the report is in the
    /// details).
    pub const VERIFY_COULD_NOT_RUN: u32 = 105;
}

/// A failed invocation, as the runtime receives it: `{"cniVersion","code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    /// Short: what failed.
    pub msg: String,
    /// Longer: every problem, and what would be right.
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Configuration problems, all named by key (`proxyEgressPort`, `CNI_ARGS AppPorts`).
    pub fn invalid_config(errors: &[ConfigError]) -> Self {
        from_config_errors(
            code::INVALID_NETWORK_CONFIG,
            "invalid network configuration",
            errors,
        )
    }

    /// Keys of the network configuration meshinit does not know (likely typos).
    pub fn unsupported_fields(errors: &[ConfigError]) -> Self {
        from_config_errors(
            code::UNSUPPORTED_FIELD,
            "unsupported field in network configuration",
            errors,
        )
    }

    /// The object printed on standard output, in the protocol version `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct ErrorObject<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let object = ErrorObject {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string_pretty(&object).unwrap_or_else(|_| {
            // Plain strings and a number always serialise; keep a valid object regardless.
            format!(
                r#"{{"cniVersion":"{LATEST}","code":{},"msg":"internal error"}}"#,
                self.code
            )
        })
    }
}

fn from_config_errors(code: u32, what: &str, errors: &[ConfigError]) -> CniError {
    let lines = problem_lines(errors);
    let msg = match errors {
        [] => what.to_owned(),
        [only] => format!("{what}: {only}"),
        [first, rest @ ..] => format!("{what}: {first} (and {} more)", rest.len()),
    };
    CniError::new(code, msg, lines.join("\n"))
}

impl From<Error> for CniError {
    fn from(error: Error) -> Self {
        match &error {
            Error::Config(errors) => CniError::invalid_config(errors),
            other => CniError::new(other.cni_code(), other.to_string(), ""),
        }
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() && !self.msg.contains(&self.details) {
            write!(f, " ({})", self.details.replace('\n', "; "))?;
        }
        Ok(())
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The attachment parameters the specification requires for this command. CNI_PATH is
    /// not among them: meshinit delegates to no other plugin.
    fn required_variables(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Gc | Command::Version => &[],
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        })
    }
}

/// One invocation's parameters, from the `CNI_*` environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    pub container_id: Option<String>,
    /// `None` when unset or empty, which DEL allows (the namespace is already gone).
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// `CNI_ARGS`, e.g. `IgnoreUnknown=1;K8S_POD_NAME=web;AppPorts=8080`.
    pub args: Option<String>,
}

impl Invocation {
    /// Reads the parameters through `get` (`std::env::var_os` in the binary). A variable that
    /// is required but unset or empty, or malformed, is error code 4 naming it.
    pub fn from_env(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, CniError> {
        let text = |name: &str| -> Result<Option<String>, CniError> {
            match get(name) {
                None => Ok(None),
                Some(value) if value.is_empty() => Ok(None),
                Some(value) => value.into_string().map(Some).map_err(|_| {
                    CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!("{name} is not valid UTF-8"),
                        "",
                    )
                }),
            }
        };
        let Some(command_text) = text("CNI_COMMAND")? else {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                "required environment variable CNI_COMMAND is missing",
                "meshinit runs as a CNI plugin when a container runtime sets CNI_COMMAND \
                 (ADD, DEL, CHECK, STATUS, GC or VERSION) and passes the network configuration \
                 on standard input",
            ));
        };
        let command = Command::parse(&command_text).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_COMMAND: unknown command {command_text:?}"),
                "expected ADD, DEL, CHECK, STATUS, GC or VERSION",
            )
        })?;
        let container_id = text("CNI_CONTAINERID")?;
        let netns = get("CNI_NETNS")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let ifname = text("CNI_IFNAME")?;
        let args = text("CNI_ARGS")?;

        let present = |name: &str| match name {
            "CNI_CONTAINERID" => container_id.is_some(),
            "CNI_NETNS" => netns.is_some(),
            _ => ifname.is_some(),
        };
        let missing: Vec<&str> = command
            .required_variables()
            .iter()
            .copied()
            .filter(|name| !present(name))
            .collect();
        if !missing.is_empty() {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!(
                    "required environment variables missing for {command}: {}",
                    missing.join(", ")
                ),
                "",
            ));
        }
        // Validated for the verbs that require them, as the reference plugins do; STATUS, GC
        // and VERSION ignore them.
        let required = command.required_variables();
        if let Some(id) = container_id
            .as_deref()
            .filter(|_| required.contains(&"CNI_CONTAINERID"))
        {
            check_container_id(id)?;
        }
        if let Some(name) = ifname
            .as_deref()
            .filter(|_| required.contains(&"CNI_IFNAME"))
        {
            check_interface_name(name)?;
        }
        Ok(Invocation {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

/// The specification's container ID: an alphanumeric, then alphanumerics, `_`, `.` or `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut bytes = id.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_CONTAINERID: {id:?} is not a container ID"),
            "it must start with a letter or digit, followed by letters, digits, '_', '.' or '-'",
        ))
    }
}

/// A Linux interface name, as the reference plugins check it.
fn check_interface_name(name: &str) -> Result<(), CniError> {
    let problem = if name.len() > 15 {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_IFNAME: {name:?} {why}"),
            "",
        )),
    }
}

/// Reads standard input, at most [`input::MAX_DOCUMENT_BYTES`]. For VERSION the input is
/// optional, and a terminal is not waited on, so `CNI_COMMAND=VERSION meshinit` answers at
/// once. Too large, a byte order mark or invalid UTF-8 is code 6; a failed read code 5.
pub fn read_stdin(command: Command) -> Result<String, CniError> {
    let stdin = std::io::stdin();
    if command == Command::Version && stdin.is_terminal() {
        return Ok(String::new());
    }
    input::read_bounded(stdin.lock())
        .and_then(input::decode)
        .map_err(|e| match e {
            InputError::Io(e) => CniError::new(
                code::IO_FAILURE,
                format!("cannot read the network configuration from standard input: {e}"),
                "",
            ),
            other => CniError::new(
                code::DECODING_FAILURE,
                format!("cannot decode the network configuration: standard input {other}"),
                "",
            ),
        })
}

/// The `cniVersion` a request declares, read leniently, to answer errors in the caller's
/// version even when the rest of the request is unusable.
pub fn declared_version(stdin: &str) -> Option<String> {
    let value: Value = serde_json::from_str(stdin).ok()?;
    value.get("cniVersion")?.as_str().map(str::to_owned)
}

/// The plugin configuration a runtime derived for this invocation (SPEC section 3).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub cni_version: SpecVersion,
    /// Every key as received (plugin keys, `name`, `prevResult`, `runtimeConfig`...).
    pub keys: Map<String, Value>,
}

impl NetworkConfig {
    /// Decodes the configuration and checks its version: undecodable is code 6, an
    /// unsupported (or missing: 0.1.0 implied) `cniVersion` code 1.
    pub fn parse(stdin: &str) -> Result<Self, CniError> {
        let value: Value = from_str_unique_keys(stdin).map_err(|e| {
            let what = if stdin.trim().is_empty() {
                "standard input is empty".to_owned()
            } else {
                format!(
                    "not valid JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                )
            };
            CniError::new(
                code::DECODING_FAILURE,
                format!("cannot decode the network configuration: {what}"),
                "",
            )
        })?;
        let Value::Object(keys) = value else {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                "cannot decode the network configuration: it must be a JSON object",
                "",
            ));
        };
        let supported = SUPPORTED_VERSIONS.join(", ");
        let cni_version = match keys.get("cniVersion") {
            None => {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "incompatible CNI version: the network configuration has no cniVersion (0.1.0 implied)",
                    format!("meshinit supports {supported}"),
                ));
            }
            Some(Value::String(text)) => {
                match SpecVersion::parse(text).filter(|v| v.is_supported()) {
                    Some(version) => version,
                    None => {
                        return Err(CniError::new(
                            code::INCOMPATIBLE_VERSION,
                            format!(
                                "incompatible CNI version: the network configuration is cniVersion {text:?}"
                            ),
                            format!("meshinit supports {supported}"),
                        ));
                    }
                }
            }
            Some(other) => {
                return Err(CniError::new(
                    code::DECODING_FAILURE,
                    format!(
                        "cannot decode the network configuration: cniVersion: {other} is not a string"
                    ),
                    "",
                ));
            }
        };
        Ok(NetworkConfig { cni_version, keys })
    }

    /// `prevResult`, when a previous plugin in the chain produced one.
    pub fn prev_result(&self) -> Option<&Value> {
        self.keys.get("prevResult").filter(|v| !v.is_null())
    }

    /// `runtimeConfig`, when the runtime inserted one.
    pub fn runtime_config(&self) -> Option<&Value> {
        self.keys.get("runtimeConfig").filter(|v| !v.is_null())
    }
}

/// Writes a result to standard output. A runtime that closed the pipe gets nothing, which
/// must not turn into a panic.
pub fn print_stdout(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_duplicated_key_is_a_decoding_error_not_a_silent_override() {
        let text = r#"{"cniVersion":"1.0.0","proxyEgressPort":"15001","proxyEgressPort":"1"}"#;
        let error = NetworkConfig::parse(text).unwrap_err();
        assert_eq!(error.code, code::DECODING_FAILURE);
        assert!(
            error.msg.contains("duplicate key \"proxyEgressPort\""),
            "{}",
            error.msg
        );
    }

    #[test]
    fn add_needs_container_netns_and_ifname_and_names_each_missing_one() {
        let error = Invocation::from_env(env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]))
            .unwrap_err();
        assert_eq!(error.code, code::INVALID_ENVIRONMENT);
        assert!(
            error.msg.contains("CNI_CONTAINERID, CNI_NETNS"),
            "{}",
            error.msg
        );
        assert!(!error.msg.contains("CNI_IFNAME"), "{}", error.msg);
    }

    #[test]
    fn del_allows_an_empty_netns() {
        let invocation = Invocation::from_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ]))
        .unwrap();
        assert_eq!(invocation.command, Command::Del);
        assert_eq!(invocation.netns, None);
    }

    #[test]
    fn version_status_and_gc_need_nothing_else() {
        for command in ["VERSION", "STATUS", "GC"] {
            assert!(
                Invocation::from_env(env(&[("CNI_COMMAND", command)])).is_ok(),
                "{command}"
            );
        }
    }

    #[test]
    fn rejects_missing_unknown_and_malformed_parameters_with_code_4() {
        let cases: [&[(&str, &str)]; 5] = [
            &[],
            &[("CNI_COMMAND", "add")],
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "-x"),
                ("CNI_NETNS", "/n"),
                ("CNI_IFNAME", "eth0"),
            ],
            &[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_NETNS", "/n"),
                ("CNI_IFNAME", "a/b"),
            ],
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "sixteen-bytes-xx"),
            ],
        ];
        let names = [
            "CNI_COMMAND",
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_IFNAME",
            "CNI_IFNAME",
        ];
        for (pairs, name) in cases.iter().zip(names) {
            let error = Invocation::from_env(env(pairs)).unwrap_err();
            assert_eq!(error.code, code::INVALID_ENVIRONMENT, "{pairs:?}");
            assert!(error.msg.contains(name), "{pairs:?}: {}", error.msg);
        }
    }

    #[test]
    fn non_utf8_variables_are_named() {
        use std::os::unix::ffi::OsStringExt;
        let get = |name: &str| match name {
            "CNI_COMMAND" => Some(OsString::from("ADD")),
            "CNI_CONTAINERID" => Some(OsString::from_vec(vec![0xff, 0xfe])),
            _ => Some(OsString::from("x")),
        };
        let error = Invocation::from_env(get).unwrap_err();
        assert_eq!(error.code, code::INVALID_ENVIRONMENT);
        assert!(error.msg.contains("CNI_CONTAINERID"));
    }

    #[test]
    fn config_decoding_and_version_errors_have_their_codes() {
        let cases = [
            ("", code::DECODING_FAILURE),
            ("not json", code::DECODING_FAILURE),
            ("[1, 2]", code::DECODING_FAILURE),
            (r#"{"cniVersion": 1}"#, code::DECODING_FAILURE),
            (r#"{"name": "x"}"#, code::INCOMPATIBLE_VERSION),
            (r#"{"cniVersion": "0.2.0"}"#, code::INCOMPATIBLE_VERSION),
            (r#"{"cniVersion": "1.0"}"#, code::INCOMPATIBLE_VERSION),
        ];
        for (text, expected) in cases {
            assert_eq!(
                NetworkConfig::parse(text).unwrap_err().code,
                expected,
                "{text}"
            );
        }
        let config =
            NetworkConfig::parse(r#"{"cniVersion": "0.4.0", "prevResult": null}"#).unwrap();
        assert_eq!(config.cni_version, SpecVersion::new(0, 4, 0));
        assert!(config.prev_result().is_none());
    }

    #[test]
    fn error_objects_carry_version_code_msg_and_details() {
        let error = CniError::new(7, "invalid network configuration: x", "x\ny");
        let value: Value = serde_json::from_str(&error.to_json("1.0.0")).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"cniVersion": "1.0.0", "code": 7, "msg": "invalid network configuration: x", "details": "x\ny"})
        );
        let bare: Value =
            serde_json::from_str(&CniError::new(4, "m", "").to_json("1.1.0")).unwrap();
        assert!(bare.get("details").is_none());
    }
}
