//! `farol evm`: tools around the executor.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use farol_execution::statetest::{find_fixtures, run_file, spec_of, Options};

/// Arguments of `farol evm`.
#[derive(Debug, Args)]
pub(crate) struct EvmArgs {
    #[command(subcommand)]
    what: EvmCommand,
}

#[derive(Debug, Subcommand)]
enum EvmCommand {
    /// Run Ethereum GeneralStateTests fixtures (each case as a one-transaction block through
    /// the sequential and the parallel executor) and report each failing case.
    Statetest(StatetestArgs),
}

#[derive(Debug, Args)]
struct StatetestArgs {
    /// A fixture file, or a directory searched for `.json` fixtures.
    path: PathBuf,
    /// Print every case, not only failures.
    #[arg(long, short)]
    verbose: bool,
    /// Fork whose expectations to check, as the fixtures name it (`Cancun`, `Prague`,
    /// `Osaka`, ...); repeat for several. Default: Cancun.
    #[arg(long = "fork", value_name = "NAME")]
    forks: Vec<String>,
}

/// Runs `farol evm`.
pub(crate) fn run(args: EvmArgs) -> Result<()> {
    match args.what {
        EvmCommand::Statetest(a) => statetest(a),
    }
}

fn statetest(args: StatetestArgs) -> Result<()> {
    let files =
        find_fixtures(&args.path).with_context(|| format!("reading {}", args.path.display()))?;
    if files.is_empty() {
        bail!("no .json fixtures under {}", args.path.display());
    }
    let mut options = Options::default();
    if !args.forks.is_empty() {
        // The forks asked for, and only those.
        options.newest_when_absent = false;
        options.forks = args
            .forks
            .iter()
            .map(|f| match serde_json::from_value(serde_json::Value::String(f.clone())) {
                Ok(spec) if spec_of(&spec).is_some() => Ok(spec),
                Ok(_) | Err(_) => bail!(
                    "--fork {f}: not a fork name the state tests use that revm runs (e.g. \
                     Cancun, Prague)"
                ),
            })
            .collect::<Result<_>>()?;
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for f in &files {
        for r in run_file(f, &options) {
            let id = format!("{}::{} [{} #{}]", r.file.display(), r.name, r.fork, r.index);
            match r.failure {
                None => {
                    passed += 1;
                    if args.verbose {
                        println!("ok    {id}");
                    }
                }
                Some(why) => {
                    failed += 1;
                    println!("FAIL  {id}: {why}");
                }
            }
        }
    }
    println!(
        "statetest: {} files, {} cases: {passed} passed, {failed} failed",
        files.len(),
        passed + failed
    );
    if failed > 0 {
        bail!("{failed} state test cases failed");
    }
    if passed == 0 {
        bail!("no case ran: the fixtures have no entries for the forks asked for");
    }
    Ok(())
}
