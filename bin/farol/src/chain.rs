//! `farol chain new`: sets up a chain whose validators run on machines of their own. It
//! writes what every node shares (`chain.toml`: the genesis and the validator set) and one
//! keys file per validator, which `farol node --chain chain.toml --keys FILE` runs from.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use alloy_primitives::{Address, Bytes, U256};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use farol_crypto::SecretKey;
use farol_network::Identity;
use farol_node::config::{ChainFile, CoinShare, KeysFile, Member, MemberKeys, ValidatorKeys};
use farol_node::genesis::{ConsensusParams, GenesisAccount};
use farol_node::{Genesis, NodeConfig};
use rand::RngCore;

/// Arguments of `farol chain`.
#[derive(Debug, Args)]
pub(crate) struct ChainArgs {
    /// What to do.
    #[command(subcommand)]
    command: ChainCommand,
}

/// The subcommands of `farol chain`.
#[derive(Debug, Subcommand)]
enum ChainCommand {
    /// Set up a new chain: its genesis, its validator set with fresh keys, and the common
    /// coin's shares dealt among them. This command is the dealer: it makes every
    /// validator's secret keys, so run it where no one else can read them and hand each
    /// keys file to its validator's operator alone.
    New(NewArgs),
    /// Make a validator's own keys (BLS and network identity) on its machine: the secrets
    /// into `--out` (readable by you alone), and on stdout the public part, as a TOML file
    /// for whoever sets the chain up (`farol chain new --member FILE`). Its secrets then
    /// never leave the machine; `farol chain new` deals it only its coin share.
    Key(KeyArgs),
}

/// Arguments of `farol chain key`.
#[derive(Debug, Args)]
struct KeyArgs {
    /// The keys file to write (it must not exist).
    #[arg(long)]
    out: PathBuf,
}

/// Arguments of `farol chain new`.
#[derive(Debug, Args)]
struct NewArgs {
    /// The folder to write `chain.toml` and `validator-<i>.keys.toml` into (made if absent;
    /// it must not hold a chain file or keys files already).
    #[arg(long)]
    out: PathBuf,
    /// A validator's network address: the UDP IP:PORT its peers dial. Once per validator,
    /// in committee order.
    #[arg(long = "validator", value_name = "IP:PORT", required = true)]
    validators: Vec<SocketAddr>,
    /// The validators' stakes, one per `--validator` in the same order (default: 1 each).
    #[arg(long = "stake", value_name = "STAKE")]
    stakes: Vec<u64>,
    /// Where the priority fees of each validator's blocks go, one per `--validator` in the
    /// same order (default: the zero address).
    #[arg(long = "fee-recipient", value_name = "ADDRESS")]
    fee_recipients: Vec<Address>,
    /// The chain id (EIP-155): one no other chain uses.
    #[arg(long)]
    chain_id: u64,
    /// A balance at genesis, `ADDRESS=AMOUNT` with the amount in wei or followed by
    /// `ether` (`0xf39F…2266=1000ether`); repeat for more accounts.
    #[arg(long = "alloc", value_name = "ADDRESS=AMOUNT", value_parser = parse_alloc)]
    alloc: Vec<(Address, U256)>,
    /// Accounts at genesis from a file: a geth genesis file (JSON; its `alloc` is read, the
    /// rest is not) or a table of addresses and accounts (JSON, or TOML unless the name ends
    /// in `.json`), each a balance or `{ balance, nonce, code, storage }`: contracts placed
    /// at genesis. An address may not be given here and in `--alloc` too.
    #[arg(long, value_name = "FILE")]
    alloc_file: Option<PathBuf>,
    /// Gas limit of every block (Ethereum's by default; see `DEFAULT_GAS_LIMIT`).
    #[arg(long, default_value_t = farol_node::genesis::DEFAULT_GAS_LIMIT)]
    gas_limit: u64,
    /// Base fee per gas of every block, in wei (Farol's does not float with demand).
    #[arg(long, default_value_t = 1_000_000_000)]
    base_fee: u64,
    /// A validator's own public keys (what `farol chain key` printed on its machine), or
    /// `new` for keys made here; once per `--validator` in the same order, or never (all
    /// made here). A validator with its own keys gets a coin share file
    /// (`validator-<i>.coin.toml`) instead of a keys file.
    #[arg(long = "member", value_name = "FILE|new")]
    members: Vec<String>,
    /// Leave out the CREATE2 deployer that genesis otherwise holds at
    /// 0x4e59b44847b379578588920ca78fbf26c0b4956c (what Foundry's salted deployments call).
    #[arg(long)]
    no_create2_deployer: bool,
}

/// Parses `--alloc ADDRESS=AMOUNT`.
fn parse_alloc(v: &str) -> Result<(Address, U256), String> {
    let (address, amount) =
        v.split_once('=').ok_or_else(|| format!("{v:?} is not ADDRESS=AMOUNT"))?;
    let address: Address =
        address.trim().parse().map_err(|e| format!("{address:?} is not an address: {e}"))?;
    let amount = amount.trim();
    let (digits, unit) = match amount.strip_suffix("ether") {
        Some(d) => (d.trim(), U256::from(10u64).pow(U256::from(18))),
        None => (amount, U256::from(1)),
    };
    let n: U256 = digits
        .parse()
        .ok()
        .filter(|_| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{amount:?} is not an amount in wei or like 1000ether"))?;
    let wei = n.checked_mul(unit).ok_or_else(|| format!("{amount:?} is past 2^256 wei"))?;
    Ok((address, wei))
}

/// Runs `farol chain`.
pub(crate) fn run(args: ChainArgs) -> anyhow::Result<()> {
    match args.command {
        ChainCommand::New(a) => new(a),
        ChainCommand::Key(a) => key(a),
    }
}

/// The file name of validator `i`'s keys.
fn keys_name(i: usize) -> String {
    format!("validator-{i}.keys.toml")
}

/// The file name of validator `i`'s coin share (a validator with keys of its own).
fn coin_name(i: usize) -> String {
    format!("validator-{i}.coin.toml")
}

/// What `farol chain new` deals validator `i`: its keys (made here), or its coin share and
/// position (it brought its own keys).
enum Dealt {
    /// Keys made here, with the coin share.
    Keys(ValidatorKeys),
    /// The coin share of a validator with keys of its own.
    Share(CoinShare),
}

impl Dealt {
    /// Its file's name and text.
    fn file(&self) -> anyhow::Result<(String, String)> {
        Ok(match self {
            Dealt::Keys(k) => (keys_name(usize::from(k.index)), toml::to_string(k)?),
            Dealt::Share(c) => (coin_name(usize::from(c.index)), toml::to_string(c)?),
        })
    }
}

/// `farol chain key`: a validator's own keys.
fn key(args: KeyArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    rand::rng().fill_bytes(&mut seed);
    let bls = SecretKey::from_seed(&seed);
    let id = Identity::generate().context("generating a network identity")?;
    let secrets = KeysFile {
        index: None,
        bls_secret: Bytes::copy_from_slice(&bls.to_bytes()),
        network_secret: Bytes::copy_from_slice(id.to_pkcs8()),
        coin_secret: None,
    };
    let public = MemberKeys {
        bls_public: Bytes::copy_from_slice(&bls.public_key().to_bytes()),
        bls_possession: Bytes::copy_from_slice(&bls.prove_possession().to_bytes()),
        network_public: Bytes::copy_from_slice(&id.public_key().0),
    };
    let out = &args.out;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("--out: writing {}", out.display()))?;
    let written = toml::to_string(&secrets)
        .map_err(std::io::Error::other)
        .and_then(|text| f.write_all(text.as_bytes()))
        .and_then(|()| f.sync_all());
    if let Err(e) = written {
        // Not left half-written, for a retry to be refused over.
        let _ = std::fs::remove_file(out);
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    // The public part on stdout; if it cannot be written (a full disk, a closed pipe), the
    // secret keys go too, so that a retry is not refused over a file whose public part was
    // never seen (before stop 46 this panicked and left the file).
    let shown = toml::to_string(&public).map_err(std::io::Error::other).and_then(|text| {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        writeln!(
            o,
            "# A validator's public keys, from `farol chain key`: for `farol chain new --member`."
        )?;
        write!(o, "{text}")?;
        o.flush()
    });
    if let Err(e) = shown {
        let _ = std::fs::remove_file(out);
        return Err(e).context("writing the public keys to stdout (the secret keys were removed)");
    }
    eprintln!(
        "wrote {} (this validator's secret keys: keep them on this machine). The lines on \
         stdout are the public part: give them, as a file, to whoever runs `farol chain new`, \
         with this validator's network address.",
        out.display()
    );
    Ok(())
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let n = args.validators.len();
    if args.chain_id == 0 {
        bail!("--chain-id: must be above 0");
    }
    if n > usize::from(u16::MAX) + 1 {
        bail!("--validator: given {n} times; at most 65536 validators");
    }
    let stakes = match args.stakes.len() {
        0 => vec![1; n],
        k if k == n => args.stakes.clone(),
        k => bail!("--stake: given {k} times for {n} validators (once per --validator, or never)"),
    };
    if let Some(i) = stakes.iter().position(|s| *s == 0) {
        bail!("--stake: validator {i}'s is 0 (a stake must be above 0)");
    }
    let recipients = match args.fee_recipients.len() {
        0 => vec![Address::ZERO; n],
        k if k == n => args.fee_recipients.clone(),
        k => bail!(
            "--fee-recipient: given {k} times for {n} validators (once per --validator, or never)"
        ),
    };
    let mut alloc = match &args.alloc_file {
        None => std::collections::BTreeMap::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--alloc-file {}", path.display()))?;
            let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
            farol_node::genesis::read_accounts(&text, json)
                .map_err(|e| anyhow::anyhow!("--alloc-file {}: {e}", path.display()))?
        }
    };
    for (a, wei) in &args.alloc {
        if alloc.insert(*a, GenesisAccount::balance(*wei)).is_some() {
            bail!("--alloc: {a} is given twice (or in --alloc-file too)");
        }
    }
    let own: Vec<Option<MemberKeys>> = match args.members.len() {
        0 => vec![None; n],
        k if k == n => args
            .members
            .iter()
            .map(|m| {
                if m == "new" {
                    return Ok(None);
                }
                let keys =
                    MemberKeys::load(Path::new(m)).map_err(|e| anyhow::anyhow!("--member {e}"))?;
                keys.check().map_err(|e| anyhow::anyhow!("--member {m}: {e}"))?;
                Ok(Some(keys))
            })
            .collect::<anyhow::Result<_>>()?,
        k => bail!("--member: given {k} times for {n} validators (once per --validator, or never)"),
    };
    // One key twice would make two validators one.
    for (i, a) in own.iter().enumerate() {
        let Some(a) = a else { continue };
        for (j, b) in own[..i].iter().enumerate() {
            if b.as_ref().is_some_and(|b| {
                b.bls_public == a.bls_public || b.network_public == a.network_public
            }) {
                bail!("--member: validators {j} and {i} have one key");
            }
        }
    }
    let members: Vec<(SocketAddr, u64, Address)> = args
        .validators
        .iter()
        .zip(&stakes)
        .zip(&recipients)
        .map(|((a, s), r)| (*a, *s, *r))
        .collect();
    let (committee, dealt) = deal_with(&members, own)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut genesis = Genesis {
        chain_id: args.chain_id,
        timestamp: now,
        gas_limit: args.gas_limit,
        base_fee: args.base_fee,
        alloc,
        consensus: ConsensusParams::default(),
    };
    if !args.no_create2_deployer {
        genesis = genesis.with_create2_deployer();
    }
    let chain = ChainFile { genesis, committee };
    // What a node will check at its start, checked before anything is written: a validator's
    // configuration of defaults on this chain.
    let mut probe = NodeConfig::with_defaults(args.out.join("probe"), chain.clone());
    probe.validator = dealt.iter().find_map(|d| match d {
        Dealt::Keys(k) => Some(k.clone()),
        Dealt::Share(_) => None,
    });
    // Without keys made here, a full node's: it needs a peer to be a valid configuration.
    probe.sync.peers = vec![SocketAddr::from(([127, 0, 0, 1], 1))];
    probe.validate().map_err(|e| anyhow::anyhow!("{}", flag_of(e)))?;

    if let Some(p) = earlier_chain(&args.out)? {
        bail!(
            "{} exists (from an earlier run?): `farol chain new` writes only into a folder \
             without a chain file or keys files; remove them or choose another --out",
            p.display()
        );
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .with_context(|| format!("making {}", args.out.display()))?;
    write_all(&args.out, &chain, &dealt)?;
    print_summary(&args, &chain, &stakes, &dealt).context("writing the summary to stdout")?;
    Ok(())
}

/// The first chain file or keys file already in `dir` (whatever its number), if any.
fn earlier_chain(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let name = entry.with_context(|| format!("reading {}", dir.display()))?.file_name();
        let name = name.to_string_lossy();
        let dealt = name.ends_with(".keys.toml") || name.ends_with(".coin.toml");
        if name == "chain.toml" || (name.starts_with("validator-") && dealt) {
            return Ok(Some(dir.join(&*name)));
        }
    }
    Ok(None)
}

/// Writes the keys files and then the chain file into `out`, all or none: each is written
/// and synced in a fresh folder inside `out` first, then linked into place (a link fails
/// rather than replace a file that appeared meanwhile, and does not follow a symbolic link
/// there), the chain file last; on any error the files this call put in place are removed.
fn write_all(out: &Path, chain: &ChainFile, dealt: &[Dealt]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let staging = tempfile::Builder::new()
        .prefix(".farol-chain-new-")
        .tempdir_in(out)
        .with_context(|| format!("making a folder in {}", out.display()))?;
    let write = |name: &str, text: String, mode: u32| -> anyhow::Result<PathBuf> {
        let path = staging.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
        Ok(path)
    };
    let mut staged = Vec::with_capacity(dealt.len() + 1);
    for d in dealt {
        let (name, text) = d.file().context("writing a keys file")?;
        staged.push((write(&name, text, 0o600)?, out.join(&name)));
    }
    let text = toml::to_string(chain).context("writing the chain file")?;
    staged.push((write("chain.toml", text, 0o644)?, out.join("chain.toml")));
    let mut placed: Vec<&Path> = Vec::with_capacity(staged.len());
    for (from, to) in &staged {
        if let Err(e) = std::fs::hard_link(from, to) {
            for p in &placed {
                let _ = std::fs::remove_file(p);
            }
            return Err(e).with_context(|| format!("placing {}", to.display()));
        }
        placed.push(to);
    }
    // The folder's new entries, durable before the summary says the chain is written.
    std::fs::File::open(out)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", out.display()))
}

/// A validation error of the probe configuration, with the flag that set the field.
fn flag_of(e: farol_node::config::ConfigError) -> String {
    let text = e.to_string();
    let flag = if text.starts_with("committee[") && text.contains("].address") {
        "--validator"
    } else if text.starts_with("committee[") && text.contains("].stake") {
        "--stake"
    } else if text.starts_with("committee[")
        && (text.contains("].bls_") || text.contains("].network_public"))
    {
        "--member"
    } else if text.starts_with("genesis.gas_limit") {
        "--gas-limit"
    } else if text.starts_with("genesis.chain_id") {
        "--chain-id"
    } else if text.starts_with("genesis.alloc.") {
        "--alloc-file"
    } else {
        return text;
    };
    format!("{flag}: {text}")
}

/// Says what `chain new` wrote, on stdout; a failed write is an error (before stop 46 it
/// panicked, after the files were in place).
fn print_summary(
    args: &NewArgs,
    chain: &ChainFile,
    stakes: &[u64],
    dealt: &[Dealt],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let dir = args.out.display();
    writeln!(
        out,
        "Chain {} with {} validators, written to {dir}:",
        chain.genesis.chain_id,
        chain.committee.len()
    )?;
    writeln!(out, "  chain.toml: the genesis and the validator set; give it to every node")?;
    for (i, (m, d)) in chain.committee.iter().zip(dealt).enumerate() {
        let (file, what) = match d {
            Dealt::Keys(_) => (keys_name(i), "its secret keys"),
            Dealt::Share(_) => (coin_name(i), "its coin share (its keys are its own)"),
        };
        writeln!(
            out,
            "  {file}: validator {i} ({}, stake {}): {what}; for its operator alone",
            m.address, stakes[i]
        )?;
    }
    writeln!(out)?;
    writeln!(out, "Run validator i on its machine with:")?;
    writeln!(
        out,
        "  farol node --chain chain.toml --keys validator-i.keys.toml --data-dir DIR \\\n      \
         --http 0.0.0.0:8545 --peer OTHER_VALIDATOR_RPC:8545 ...",
    )?;
    if dealt.iter().any(|d| matches!(d, Dealt::Share(_))) {
        writeln!(
            out,
            "or, for one with keys of its own: --keys ITS_KEYS.toml --coin validator-i.coin.toml"
        )?;
    }
    writeln!(
        out,
        "and a full node with --chain, --data-dir and at least one --peer, without --keys."
    )?;
    writeln!(
        out,
        "Delete the keys and coin share files here once handed out: whoever holds a keys \
         file can sign as that validator."
    )?;
    Ok(())
}

/// A new chain's validator set and each validator's keys: fresh BLS and network keys for
/// every member (`(address, stake, fee recipient)`, in committee order), and the common
/// coin's key dealt among them (the caller is the dealer, docs/consensus.md §5).
pub(crate) fn deal(
    members: &[(SocketAddr, u64, Address)],
) -> anyhow::Result<(Vec<Member>, Vec<ValidatorKeys>)> {
    let (committee, dealt) = deal_with(members, vec![None; members.len()])?;
    let keys = dealt
        .into_iter()
        .filter_map(|d| match d {
            Dealt::Keys(k) => Some(k),
            Dealt::Share(_) => None,
        })
        .collect();
    Ok((committee, keys))
}

/// [`deal`], where `own[i]` holds member i's own public keys, if it brought them: such a
/// member gets only its coin share and position.
fn deal_with(
    members: &[(SocketAddr, u64, Address)],
    own: Vec<Option<MemberKeys>>,
) -> anyhow::Result<(Vec<Member>, Vec<Dealt>)> {
    let n = members.len();
    let mut rng = rand::rng();
    let mut committee = Vec::with_capacity(n);
    let mut secrets = Vec::with_capacity(n);
    for (&(address, stake, fee_recipient), own) in members.iter().zip(own) {
        let (public, secret) = match own {
            Some(keys) => (keys, None),
            None => {
                let mut seed = [0u8; 32];
                rng.fill_bytes(&mut seed);
                let bls = SecretKey::from_seed(&seed);
                let id = Identity::generate().context("generating a network identity")?;
                let public = MemberKeys {
                    bls_public: Bytes::copy_from_slice(&bls.public_key().to_bytes()),
                    bls_possession: Bytes::copy_from_slice(&bls.prove_possession().to_bytes()),
                    network_public: Bytes::copy_from_slice(&id.public_key().0),
                };
                (public, Some((bls, id)))
            }
        };
        committee.push(Member {
            bls_public: public.bls_public,
            bls_possession: public.bls_possession,
            network_public: public.network_public,
            address,
            stake,
            fee_recipient,
            coin_public: None,
        });
        secrets.push(secret);
    }
    let stakes: Vec<u64> = members.iter().map(|m| m.1).collect();
    let t = farol_consensus::committee::coin_threshold(&stakes).context(
        "--stake: too uneven for a common coin with one share per validator (docs/consensus.md \
         §5): no number of shares is both out of reach of validators under a third of the \
         stake and within reach of every quorum's honest members",
    )?;
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let coin =
        farol_crypto::coin::deal(&seed, n, t).map_err(|e| anyhow::anyhow!("dealing: {e}"))?;
    for (m, k) in committee.iter_mut().zip(&coin.publics) {
        m.coin_public = Some(Bytes::copy_from_slice(&k.to_bytes()));
    }
    let dealt = secrets
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let index = u16::try_from(i).context("more than 65536 validators")?;
            let coin_secret = Bytes::copy_from_slice(&coin.secrets[i].to_bytes());
            Ok(match secret {
                Some((bls, id)) => Dealt::Keys(ValidatorKeys {
                    index,
                    bls_secret: Bytes::copy_from_slice(&bls.to_bytes()),
                    network_secret: Bytes::copy_from_slice(id.to_pkcs8()),
                    coin_secret: Some(coin_secret),
                }),
                None => Dealt::Share(CoinShare { index, coin_secret }),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((committee, dealt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_wei_or_ether_and_nothing_else() {
        let a = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
        let (addr, wei) = parse_alloc(&format!("{a}=1000ether")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addr, a.parse::<Address>().unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(wei, U256::from(1000u64) * U256::from(10u64).pow(U256::from(18)));
        assert_eq!(parse_alloc(&format!("{a}=7")).map(|x| x.1), Ok(U256::from(7)));
        for bad in [
            a.to_string(),
            format!("{a}="),
            format!("{a}=ether"),
            format!("{a}=-1"),
            format!("{a}=1.5ether"),
            format!("{a}=0x10"),
            "0x12=1".to_string(),
            format!("{a}={}ether", "9".repeat(70)),
        ] {
            assert!(parse_alloc(&bad).is_err(), "{bad} was taken");
        }
    }
}
