//! Fault injection: a throwaway directory of fake programs named like the tools meshinit
//! runs (`iptables-nft-restore`, `ip6tables-legacy-restore`, `ipset`…), to put first on a
//! meshinit child's PATH. Each fake logs its arguments, then hangs, fails, or runs the real
//! program (after a delay, or and then fails anyway), depending on what the test asked for.
//!
//! ```ignore
//! let fakes = FakeTools::new();
//! fakes.add("ip6tables-nft-restore", FakeBehavior::Hang);
//! fakes.add_when("ipset", "restore", FakeBehavior::fail(1, "ipset v7.17: boom"));
//! let output = ns.command(MESHINIT).env("PATH", fakes.path_env()).args(["apply", …]).output();
//! assert_eq!(fakes.calls("ip6tables-nft-restore").len(), 1);
//! ```
//!
//! A program with no rule for an invocation runs the real one (found on this process's
//! PATH when the rule is added). Fakes that hang record their pid, and dropping the
//! `FakeTools` kills those still alive (a meshinit that forgot them must not leave sleepers
//! behind), then removes the directory.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static NEXT_FAKE_DIR: AtomicU64 = AtomicU64::new(0);

/// What a fake does for an invocation it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeBehavior {
    /// Never exits on its own (sleeps until killed), like a tool stuck on a lock.
    Hang,
    /// Writes `stderr` to standard error and exits with `code`, without running anything.
    Fail { code: i32, stderr: String },
    /// Sleeps this long, then runs the real program with the same arguments and stdin.
    RealAfterDelay(Duration),
    /// Runs the real program (so its effect happens), then writes `stderr` and exits with
    /// `code` whatever the real one did: a commit that reports failure.
    RealThenFail { code: i32, stderr: String },
    /// Runs the real program: to log calls without changing them.
    Real,
}

impl FakeBehavior {
    pub fn fail(code: i32, stderr: &str) -> FakeBehavior {
        FakeBehavior::Fail {
            code,
            stderr: stderr.to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    /// Applies when the space-joined arguments contain this; `None` = any invocation.
    args_contain: Option<String>,
    behavior: FakeBehavior,
}

#[derive(Debug, Clone)]
struct Fake {
    real: PathBuf,
    rules: Vec<Rule>,
}

/// The directory of fakes (see the module comment). Removed, and its hanging fakes
/// killed, on drop.
#[derive(Debug)]
pub struct FakeTools {
    dir: PathBuf,
    fakes: Mutex<Vec<(String, Fake)>>,
}

impl Default for FakeTools {
    fn default() -> Self {
        FakeTools::new()
    }
}

impl FakeTools {
    pub fn new() -> FakeTools {
        let dir = std::env::temp_dir().join(format!(
            "mshi-fake-{}-{}",
            std::process::id(),
            NEXT_FAKE_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        FakeTools {
            dir,
            fakes: Mutex::new(Vec::new()),
        }
    }

    /// Directory holding the fakes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `PATH` for a child: the fakes first, then this process's PATH.
    pub fn path_env(&self) -> OsString {
        let mut path = OsString::from(&self.dir);
        if let Some(current) = std::env::var_os("PATH") {
            path.push(":");
            path.push(current);
        }
        path
    }

    /// Every invocation of `program` does `behavior` (replaces earlier rules for it).
    pub fn add(&self, program: &str, behavior: FakeBehavior) -> &Self {
        self.update(program, |fake| {
            fake.rules = vec![Rule {
                args_contain: None,
                behavior,
            }];
        })
    }

    /// Invocations of `program` whose space-joined arguments contain `args_contain` do
    /// `behavior`; the first matching rule wins, and others run the real program.
    /// `args_contain` is limited to letters, digits and `-_./:=,` so that it is safe in
    /// the generated shell script.
    pub fn add_when(&self, program: &str, args_contain: &str, behavior: FakeBehavior) -> &Self {
        assert!(
            !args_contain.is_empty()
                && args_contain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=, ".contains(c)),
            "add_when: {args_contain:?} has characters the fake script cannot quote"
        );
        self.update(program, |fake| {
            fake.rules.push(Rule {
                args_contain: Some(args_contain.to_owned()),
                behavior,
            });
        })
    }

    /// The arguments of every invocation of `program` so far, oldest first.
    pub fn calls(&self, program: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!(".{program}.calls")))
            .map(|log| log.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Pids of fakes that started hanging (alive or not).
    pub fn hanging_pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join(".hanging"))
            .map(|log| log.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn update(&self, program: &str, change: impl FnOnce(&mut Fake)) -> &Self {
        assert!(
            !program.is_empty()
                && program
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "not a program name: {program:?}"
        );
        let mut fakes = self.fakes.lock().unwrap_or_else(|e| e.into_inner());
        let index = match fakes.iter().position(|(name, _)| name == program) {
            Some(index) => index,
            None => {
                let real = which::which(program)
                    .unwrap_or_else(|_| PathBuf::from(format!("/nonexistent/{program}")));
                fakes.push((
                    program.to_owned(),
                    Fake {
                        real,
                        rules: Vec::new(),
                    },
                ));
                fakes.len() - 1
            }
        };
        change(&mut fakes[index].1);
        self.write_script(program, &fakes[index].1);
        self
    }

    fn write_script(&self, program: &str, fake: &Fake) {
        let dir = shell_quote(&self.dir.to_string_lossy());
        let real = shell_quote(&fake.real.to_string_lossy());
        let mut script = format!(
            "#!/bin/sh\n# fake {program} written by tests/common/fake_tools.rs\n\
             printf '%s\\n' \"$*\" >> {dir}/.{program}.calls\n"
        );
        let mut default = None;
        script += "case \" $* \" in\n";
        for (i, rule) in fake.rules.iter().enumerate() {
            let stderr_file = self.dir.join(format!(".{program}.{i}.stderr"));
            let action = behavior_script(&rule.behavior, &dir, &real, &stderr_file);
            match &rule.args_contain {
                Some(needle) => {
                    let _ = write!(script, "  *'{needle}'*)\n{action}\n    ;;\n");
                }
                None => {
                    default.get_or_insert(action);
                }
            }
        }
        script += "esac\n";
        script += &default.unwrap_or_else(|| format!("exec {real} \"$@\""));
        script += "\n";
        let path = self.dir.join(program);
        // Write under another name and rename: a fake being replaced while a child runs it
        // must be either the old script or the new one, never half of each.
        let staging = self.dir.join(format!(".{program}.new"));
        std::fs::write(&staging, script)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", staging.display()));
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", staging.display()));
        std::fs::rename(&staging, &path)
            .unwrap_or_else(|e| panic!("cannot rename to {}: {e}", path.display()));
    }
}

fn behavior_script(behavior: &FakeBehavior, dir: &str, real: &str, stderr_file: &Path) -> String {
    let write_stderr = |text: &str| {
        std::fs::write(stderr_file, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", stderr_file.display()));
        format!("cat {} >&2", shell_quote(&stderr_file.to_string_lossy()))
    };
    match behavior {
        FakeBehavior::Hang => {
            format!("    echo $$ >> {dir}/.hanging\n    exec sleep 1000000")
        }
        FakeBehavior::Fail { code, stderr } => {
            format!("    {}\n    exit {code}", write_stderr(stderr))
        }
        FakeBehavior::RealAfterDelay(delay) => {
            format!(
                "    sleep {}.{:03}\n    exec {real} \"$@\"",
                delay.as_secs(),
                delay.subsec_millis()
            )
        }
        FakeBehavior::RealThenFail { code, stderr } => {
            format!(
                "    {real} \"$@\"\n    {}\n    exit {code}",
                write_stderr(stderr)
            )
        }
        FakeBehavior::Real => format!("    exec {real} \"$@\""),
    }
}

/// `'text'` for sh, with embedded single quotes escaped.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Drop for FakeTools {
    fn drop(&mut self) {
        for pid in self.hanging_pids() {
            // Only a process that is still our fake's sleep: the pid may have been reused.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
