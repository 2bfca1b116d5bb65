//! Running a child program (iptables-save/-restore, ipset) with a bounded wait: a program
//! that has not finished by the run's deadline is killed with its process group, and a
//! child never outlives meshinit (it gets SIGKILL when meshinit dies, even by kill -9), so a
//! crashed run cannot leave a half-fed transaction behind to race the next one.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::debug;

use crate::error::{Error, Result};

/// How long child programs may still work after the lock deadline: enough for the largest
/// transactions (100,000 set members load in well under a second), short enough that a hung
/// program is noticed.
pub const WORK_ALLOWANCE: Duration = Duration::from_secs(5);

/// The time limits of one run, fixed when it starts: `--lock-timeout` bounds all waiting
/// for locks held by others, in total; child programs are killed `WORK_ALLOWANCE` later.
#[derive(Debug, Clone, Copy)]
pub struct TimeBudget {
    lock_deadline: Instant,
    kill_deadline: Instant,
}

impl TimeBudget {
    pub fn starting_now(lock_timeout: Duration) -> Self {
        let lock_deadline = Instant::now() + lock_timeout;
        TimeBudget {
            lock_deadline,
            kill_deadline: lock_deadline + WORK_ALLOWANCE,
        }
    }

    /// A budget of its own for undoing a failed transaction: the undo must get its chance
    /// even when the failure used up the run's time.
    pub fn for_undo() -> Self {
        Self::starting_now(Duration::from_secs(2))
    }

    /// What is left of the time to wait for locks.
    pub fn lock_wait_left(&self) -> Duration {
        self.lock_deadline.saturating_duration_since(Instant::now())
    }

    pub fn lock_deadline(&self) -> Instant {
        self.lock_deadline
    }

    fn kill_in(&self) -> Duration {
        self.kill_deadline.saturating_duration_since(Instant::now())
    }
}

/// Runs `program args`, feeding `input` on stdin, and returns its output when it exits 0.
pub fn run(
    program: &Path,
    args: &[&str],
    input: Option<&str>,
    budget: &TimeBudget,
) -> Result<Output> {
    let name = program_name(program);
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl).
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| Error::io(format!("starting {name}"), e))?;
    let pid = Pid::from_raw(child.id() as i32);
    let stdin = child.stdin.take();
    let input = input.map(str::to_owned);
    let (done, finished) = mpsc::channel();
    // The pdeath signal follows the thread that forked the child, which is this one: it
    // waits below until the child is gone, so the signal only fires when meshinit dies.
    std::thread::spawn(move || {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A child that dies early closes its stdin; its exit status says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(budget.kill_in()) {
        Ok(output) => output.map_err(|e| Error::io(format!("waiting for {name}"), e))?,
        Err(_) => {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = finished.recv();
            return Err(Error::Timeout {
                program: name,
                limit: "--lock-timeout plus 5 s",
            });
        }
    };
    debug!(program = %name, ?args, status = %output.status, "child finished");
    if output.status.success() {
        Ok(output)
    } else if output.status.code() == Some(4) && name.contains("legacy") {
        // iptables' RESOURCE_PROBLEM: the xtables lock could not be had in time.
        Err(Error::LockTimeout {
            program: name,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    } else {
        Err(Error::CommandFailed {
            program: name,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn program_name(program: &Path) -> String {
    program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
