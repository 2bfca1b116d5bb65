//! The `meshinit` binary: parses arguments, sets up logging, maps errors to exit codes.

use std::io::IsTerminal;

use clap::Parser;
use meshinit::commands::{Cli, LogFormat};
use nix::sys::signal;
use tracing_subscriber::EnvFilter;

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`meshinit render | head`) instead of panicking on a broken pipe.
    // SAFETY: called before any other thread exists; SIG_DFL is always a valid handler.
    unsafe {
        let _ = signal::signal(signal::Signal::SIGPIPE, signal::SigHandler::SigDfl);
    }
    // The ECS agent probes its plugins with `--capabilities` and `--version` and needs a
    // JSON answer whatever name we are installed under (`meshinit -V` stays for people).
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(probe) = meshinit::cni::probes::Probe::from_args(&args) {
        println!("{}", probe.answer());
        std::process::exit(0);
    }
    // A runtime invoking us as a CNI plugin sets CNI_COMMAND and passes no arguments; under
    // the App Mesh plugin's name we are a CNI plugin whatever the environment says.
    let invoked_as_plugin = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|name| name == "aws-appmesh")
        })
        .unwrap_or(false);
    if invoked_as_plugin || std::env::var_os("CNI_COMMAND").is_some() {
        init_logging(LogFormat::Text);
        std::process::exit(meshinit::cni::run());
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let code = match cli.command.exec() {
        Ok(code) => code,
        Err(error) => {
            match cli.log_format {
                LogFormat::Text => eprintln!("meshinit: {error}"),
                LogFormat::Json => tracing::error!(exit_code = error.exit_code(), "{error}"),
            }
            error.exit_code()
        }
    };
    std::process::exit(code);
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, not in runtime or CI logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.without_time().init(),
        LogFormat::Json => builder.json().init(),
    }
}
