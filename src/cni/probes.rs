//! The ECS agent's probes of its CNI plugins. At startup the agent runs every plugin of its
//! `awsvpc` set, `aws-appmesh` included, as `PLUGIN --capabilities` and `PLUGIN --version`,
//! without any `CNI_*` variable, and unmarshals the answers with Go's `encoding/json` into
//! `struct { Capabilities []string }` and `struct { Version, GitShortHash, Built string }`.
//! A failure, or an answer that is not a JSON object, is terminal for the agent's task
//! networking, so meshinit answers both whatever name it is installed under, as the AWS
//! plugins do (they parse Go flags, so the one-dash spellings work too).

use serde_json::json;

/// The probe one command line asks for, if any: exactly one argument, the probe's flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Capabilities,
    Version,
}

impl Probe {
    /// `args` are the arguments after the program name.
    pub fn from_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Option<Probe> {
        let [only] = args else { return None };
        match only.as_ref().to_str()? {
            "--capabilities" | "-capabilities" => Some(Probe::Capabilities),
            "--version" | "-version" => Some(Probe::Version),
            _ => None,
        }
    }

    /// The JSON object the agent parses. meshinit declares no ECS capability: the agent
    /// asks `aws-appmesh` for none (it skips the `awsvpc-network-mode` check for it), and
    /// the AWS plugin answers `{}`.
    pub fn answer(self) -> String {
        match self {
            Probe::Capabilities => json!({ "capabilities": [] }).to_string(),
            Probe::Version => json!({
                "version": env!("CARGO_PKG_VERSION"),
                // Set by a release build (scripts/build-static.sh) when it knows them; empty
                // otherwise, as the AWS plugins print when built without their ldflags.
                "gitShortHash": option_env!("MESHINIT_GIT_SHORT_HASH").unwrap_or(""),
                "built": option_env!("MESHINIT_BUILT").unwrap_or(""),
            })
            .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_probe_flag_is_a_probe() {
        assert_eq!(
            Probe::from_args(&["--capabilities"]),
            Some(Probe::Capabilities)
        );
        assert_eq!(Probe::from_args(&["-version"]), Some(Probe::Version));
        assert_eq!(Probe::from_args(&["--version", "x"]), None);
        assert_eq!(Probe::from_args::<&str>(&[]), None);
        assert_eq!(Probe::from_args(&["render"]), None);
    }

    #[test]
    fn answers_are_json_objects() {
        for probe in [Probe::Capabilities, Probe::Version] {
            let value: serde_json::Value = serde_json::from_str(&probe.answer()).unwrap();
            assert!(value.is_object(), "{value}");
        }
    }
}
