//! The `rafthttp` command: see `rafthttp --help`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Decode(args) => cli::decode::run(args),
        cli::Command::Peer(args) => {
            init_logs();
            cli::peer::run(args)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rafthttp: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr when `RUST_LOG` asks for them; otherwise stderr carries only the
/// JSON event lines, so that scripts can parse it.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
}
