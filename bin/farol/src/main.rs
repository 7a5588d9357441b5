//! `farol`: the one Farol binary. Each subsystem adds a subcommand here (devnet, node, spn,
//! relayer, restake, keys, bench).

mod bench;
mod chain;
mod devnet;
mod evm;
mod node;

/// mimalloc serves the store's many small, short-lived allocations (pages, values) far
/// better than the system allocator; both sides of every benchmark run under it.
///
/// It is built without transparent huge pages (`no_thp`): with them, a fresh region that a
/// block's allocations touch costs the kernel 2 MiB of zeroing. `farol bench exec --only
/// exec.erc20 --runs 5` spent 0.95 s in the kernel with them and 0.33–0.54 s without (4 runs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Farol: a multi-chain framework with a mainnet hub.
#[derive(Debug, Parser)]
#[command(name = "farol", version, about, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The top-level subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Measure Farol against its baseline on the same workload; prints one JSON line per
    /// result to stdout and progress to stderr.
    Bench(bench::BenchArgs),
    /// Set up a chain whose validators run on machines of their own: its genesis and
    /// validator set (`chain.toml`) and each validator's keys, for `farol node --chain`.
    Chain(chain::ChainArgs),
    /// EVM tools: run Ethereum state-test fixtures through Farol's executors.
    Evm(evm::EvmArgs),
    /// Run a local mainnet: N validator processes (and full nodes) on loopback, anvil's
    /// accounts and ports.
    Devnet(devnet::DevnetArgs),
    /// Run one node (a validator, or a full node without validator keys) from a configuration
    /// file, or from a chain file and flags.
    Node(node::NodeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Chain(args) => chain::run(args),
        Command::Evm(args) => evm::run(args),
        Command::Devnet(args) => devnet::run(args),
        Command::Node(args) => node::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // As anyhow's own report from `main`; the status is the error's own where it says
        // one (`farol node`'s, for supervisors), else 1.
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::from(e.downcast_ref::<node::Exit>().map_or(1, |x| x.0))
        }
    }
}
