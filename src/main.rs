//! The `rafthttp` command: see `rafthttp --help`.

mod cli;

/// Counts allocations (two relaxed atomic adds each) so that `bench` and `demo` can
/// report allocations per message.
#[global_allocator]
static ALLOC: rafthttp::alloc_count::CountingAlloc = rafthttp::alloc_count::CountingAlloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match &cli.command {
        cli::Command::Decode(args) => cli::decode::run(args),
        cli::Command::Demo(args) => {
            init_logs();
            cli::demo::run(args).map_err(|e| e.to_string())
        }
        cli::Command::Bench(args) => {
            init_logs();
            cli::bench::run(args).map_err(|e| e.to_string())
        }
        cli::Command::Peer(args) => {
            init_logs();
            cli::peer::run(args)
        }
        cli::Command::EtcdMember(args) => {
            init_logs_default("info");
            cli::etcd_member::run(args).map_err(|e| e.to_string())
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
    init_logs_default("off");
}

/// Logs to stderr, filtered by `RUST_LOG`, else by `default`.
fn init_logs_default(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}
