//! The `rafthttp` command: see `rafthttp --help`.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Decode(args) => cli::decode::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rafthttp: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
