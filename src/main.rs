//! The `meshinit` binary: parses arguments, sets up logging, maps errors to exit codes.

use clap::Parser;
use meshinit::commands::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() {
    // A runtime invoking us as a CNI plugin sets CNI_COMMAND and passes no arguments.
    if std::env::var_os("CNI_COMMAND").is_some() {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.without_time().init(),
        LogFormat::Json => builder.json().init(),
    }
}
