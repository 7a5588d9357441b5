//! Generated blocks over real contracts, for the differential tests and `farol bench exec`.
//!
//! The contracts are bytecode nobody here wrote (OpenZeppelin's ERC-20 compiled with the
//! pinned npm `solc`; Uniswap V2's factory, pair and router from their npm build artifacts)
//! plus `TestKit`, a contract of ours that exercises the awkward cases. See
//! `contracts/README.md`. The world is set up by executing real transactions.
//!
//! Transactions here carry a placeholder signature and their known sender: the executors
//! take recovered transactions, and sender recovery is a separate step
//! ([`crate::recover_senders`]).

use std::collections::{BTreeMap, HashMap};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEip2930, TxEnvelope, TxLegacy};
use alloy_eips::eip2930::{AccessList, AccessListItem};
use alloy_primitives::{keccak256, Address, Bytes, Signature, TxKind, B256, U256};
use alloy_sol_types::{sol, SolCall, SolValue};
use rand::{Rng, RngCore};

use crate::env::{BlockEnv, ChainSpec, RecoveredTx};
use crate::error::ExecError;
use crate::output::BlockOutput;
use crate::sequential::execute_sequential;
use crate::state::{InMemoryState, MemAccount};

sol! {
    interface IERC20 {
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
    }
    interface IFactory {
        function createPair(address tokenA, address tokenB) external returns (address pair);
    }
    interface IRouter {
        function addLiquidity(address tokenA, address tokenB, uint256 amountADesired, uint256 amountBDesired,
            uint256 amountAMin, uint256 amountBMin, address to, uint256 deadline)
            external returns (uint256 amountA, uint256 amountB, uint256 liquidity);
        function swapExactTokensForTokens(uint256 amountIn, uint256 amountOutMin, address[] calldata path,
            address to, uint256 deadline) external returns (uint256[] memory amounts);
    }
    interface ITestKit {
        function fail(uint256 x) external;
        function exhaust() external;
        function tryFail(address target, uint256 x) external;
        function snapCoinbase() external returns (uint256 balance);
        function snapBalance(address who) external returns (uint256 balance);
        function gate(address who, uint256 threshold) external returns (bool rich);
        function bump() external returns (uint256 value);
        function relay(address[] calldata path) external;
        function hashes(bytes calldata data) external;
        function recover(bytes32 hash, uint8 v, bytes32 r, bytes32 s) external returns (address signer);
        function modexp(uint256 base, uint256 exponent, uint256 modulus) external returns (uint256 result);
        function pay(address to) external payable;
        function deploy(bytes32 salt) external payable returns (address child);
        function destroy(bytes32 salt, address beneficiary) external;
        function deployAndDestroy(bytes32 salt, address beneficiary) external payable;
    }
}

/// The artifacts built by `scripts/contracts.sh`.
const ARTIFACTS: &str = include_str!("../contracts/artifacts.json");

/// Creation bytecode of every contract in the artifacts, parsed once.
fn creation_codes() -> &'static Result<BTreeMap<String, Bytes>, String> {
    static CODES: std::sync::OnceLock<Result<BTreeMap<String, Bytes>, String>> =
        std::sync::OnceLock::new();
    CODES.get_or_init(|| {
        let v: serde_json::Value =
            serde_json::from_str(ARTIFACTS).map_err(|e| format!("artifacts.json: {e}"))?;
        let contracts = v["contracts"].as_object().ok_or("artifacts.json: no contracts")?;
        contracts
            .iter()
            .map(|(name, c)| {
                let hex =
                    c["creation"].as_str().ok_or_else(|| format!("{name}: no creation code"))?;
                Ok((name.clone(), hex.parse::<Bytes>().map_err(|e| format!("{name}: {e}"))?))
            })
            .collect()
    })
}

/// Creation bytecode of a contract in the artifacts.
pub fn creation_code(name: &str) -> Result<Bytes, String> {
    let codes = creation_codes().as_ref().map_err(Clone::clone)?;
    codes.get(name).cloned().ok_or_else(|| format!("no contract {name} in artifacts.json"))
}

/// The module of a Rust WASM contract in `contracts/wasm-examples` (`erc20`,
/// `option_pricer`), as `scripts/wasm-contracts.sh` builds it into `contracts/out/`.
pub fn rust_module(name: &str) -> Result<Vec<u8>, String> {
    // Under cargo, the crate being run is two levels below the root too (`mainnet/*`,
    // `bin/farol`); its directory is the one of this checkout even when the binary was
    // built in another checkout sharing the target directory.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let path = manifest.join("../../contracts/out").join(format!("{name}.wasm"));
    std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e}; build the Rust contracts with `bash scripts/wasm-contracts.sh`",
            path.display()
        )
    })
}

alloy_sol_types::sol! {
    function price(uint256 spot, uint256 strike, uint256 up, uint256 down, uint256 p, uint256 discount, uint256 steps) external pure returns (uint256);
}

/// The calldata of `price(...)` for the option pricers (the Rust `option_pricer` module and
/// `OptionPricer.sol`): a call at 95 on a spot of 100, up 1.01, down 1/1.01, one step's
/// discount 0.9999, on a tree of `steps` steps (6-decimal fixed point).
pub fn option_price_input(steps: u64) -> Vec<u8> {
    use alloy_sol_types::SolCall;
    priceCall {
        spot: U256::from(100_000_000u64),
        strike: U256::from(95_000_000u64),
        up: U256::from(1_010_000u64),
        down: U256::from(990_099u64),
        p: U256::from(502_488u64),
        discount: U256::from(999_900u64),
        steps: U256::from(steps),
    }
    .abi_encode()
}

/// A placeholder signature (the sender travels with the transaction).
fn placeholder_signature() -> Signature {
    Signature::new(U256::from(1), U256::from(1), false)
}

/// The kind of envelope a generated transaction uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Pre-EIP-2718 with EIP-155 chain id.
    Legacy,
    /// EIP-2930, with an access list.
    AccessList,
    /// EIP-1559.
    DynamicFee,
}

/// One automated-market-maker pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// First token.
    pub a: Address,
    /// Second token.
    pub b: Address,
}

/// Sizes of a world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorldSpec {
    /// Funded user accounts (ETH only).
    pub users: usize,
    /// The first this many users also hold their ERC-20 token ([`user_token`]).
    pub token_holders: usize,
    /// The first this many users also hold the tokens of their pools ([`user_pool`] for 1, 10,
    /// 100 and all pools) and have approved the router.
    pub swappers: usize,
    /// ERC-20 tokens.
    pub tokens: usize,
    /// Uniswap V2 pools (pairs of distinct tokens).
    pub pools: usize,
    /// TestKit instances.
    pub kits: usize,
}

impl WorldSpec {
    /// A small world with a bit of everything (the random blocks' tests use it).
    pub const SMALL: WorldSpec =
        WorldSpec { users: 16, token_holders: 16, swappers: 16, tokens: 4, pools: 3, kits: 3 };
}

/// A chain state with deployed contracts and funded users, and the block number it is at.
pub struct World {
    /// The current state.
    pub state: InMemoryState,
    /// Chain rules.
    pub chain: ChainSpec,
    /// The account that deployed everything.
    pub deployer: Address,
    /// Funded users; each holds tokens and has approved the router.
    pub users: Vec<Address>,
    /// ERC-20 tokens.
    pub tokens: Vec<Address>,
    /// Pools, each with liquidity.
    pub pools: Vec<Pool>,
    /// The Uniswap V2 router.
    pub router: Address,
    /// TestKit instances.
    pub kits: Vec<Address>,
    /// Next block number.
    pub number: u64,
    /// Base fee of generated blocks.
    pub base_fee: u64,
    nonces: HashMap<Address, u64>,
}

/// A user's token: the one it sends in ERC-20 transfers.
pub fn user_token(world: &World, user: usize) -> Address {
    world.tokens[user % world.tokens.len()]
}

/// A user's pool when swaps use the first `pools` pools.
pub fn user_pool(world: &World, user: usize, pools: usize) -> Pool {
    world.pools[user % pools.clamp(1, world.pools.len())]
}

fn user_address(i: usize) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0x5e;
    b[12..].copy_from_slice(&(i as u64).to_be_bytes());
    Address::from(b)
}

/// An address that holds nothing: a fresh recipient.
pub fn fresh_address(i: u64) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xf7;
    b[12..].copy_from_slice(&i.to_be_bytes());
    Address::from(b)
}

const TOKEN_SUPPLY: u128 = 1u128 << 100;
const USER_TOKENS: u128 = 1u128 << 70;
const ETHER: u128 = 1_000_000_000_000_000_000;

impl World {
    /// Builds a world by executing the setup transactions block by block.
    pub fn new(spec: WorldSpec) -> Result<World, ExecError> {
        let deployer = Address::from([0xde; 20]);
        let users: Vec<Address> = (0..spec.users).map(user_address).collect();
        let mut state = InMemoryState::new();
        state.insert(
            deployer,
            MemAccount { balance: U256::from(ETHER) << 40, ..Default::default() },
        );
        for u in &users {
            state.insert(
                *u,
                MemAccount { balance: U256::from(1_000_000 * ETHER), ..Default::default() },
            );
        }
        let mut world = World {
            state,
            chain: ChainSpec::default(),
            deployer,
            users,
            tokens: Vec::new(),
            pools: Vec::new(),
            router: Address::ZERO,
            kits: Vec::new(),
            number: 1,
            base_fee: 1_000_000_000,
            nonces: HashMap::new(),
        };
        let err = |e: String| ExecError::Evm { index: 0, reason: e };
        // Block 1: contracts.
        let mut txs = Vec::new();
        let weth = world.create(deployer, creation_code("WETH9").map_err(err)?, &mut txs);
        let mut code = creation_code("UniswapV2Factory").map_err(err)?.to_vec();
        code.extend_from_slice(&deployer.abi_encode());
        let factory = world.create(deployer, code.into(), &mut txs);
        let mut code = creation_code("UniswapV2Router02").map_err(err)?.to_vec();
        code.extend_from_slice(&(factory, weth).abi_encode_params());
        world.router = world.create(deployer, code.into(), &mut txs);
        for t in 0..spec.tokens {
            let mut code = creation_code("FarolToken").map_err(err)?.to_vec();
            code.extend_from_slice(
                &(format!("Token {t}"), format!("TK{t}"), U256::from(TOKEN_SUPPLY))
                    .abi_encode_params(),
            );
            let token = world.create(deployer, code.into(), &mut txs);
            world.tokens.push(token);
        }
        for _ in 0..spec.kits {
            let kit = world.create(deployer, creation_code("TestKit").map_err(err)?, &mut txs);
            world.kits.push(kit);
        }
        world.run_setup(txs)?;
        // Block 2: pools with liquidity.
        let mut txs = Vec::new();
        let router = world.router;
        for t in world.tokens.clone() {
            let data = IERC20::approveCall { spender: router, amount: U256::MAX }.abi_encode();
            txs.push(world.call(deployer, t, U256::ZERO, data, 100_000, Flavor::DynamicFee, 1));
        }
        let n = world.tokens.len();
        'pairs: for i in 0..n {
            for j in i + 1..n {
                if world.pools.len() == spec.pools {
                    break 'pairs;
                }
                let (a, b) = (world.tokens[i], world.tokens[j]);
                world.pools.push(Pool { a, b });
                let data = IFactory::createPairCall { tokenA: a, tokenB: b }.abi_encode();
                txs.push(world.call(
                    deployer,
                    factory,
                    U256::ZERO,
                    data,
                    5_000_000,
                    Flavor::DynamicFee,
                    1,
                ));
                let amount = U256::from(1u128 << 90);
                let data = IRouter::addLiquidityCall {
                    tokenA: a,
                    tokenB: b,
                    amountADesired: amount,
                    amountBDesired: amount,
                    amountAMin: U256::ZERO,
                    amountBMin: U256::ZERO,
                    to: deployer,
                    deadline: U256::MAX,
                }
                .abi_encode();
                txs.push(world.call(
                    deployer,
                    router,
                    U256::ZERO,
                    data,
                    5_000_000,
                    Flavor::DynamicFee,
                    1,
                ));
            }
        }
        world.run_setup(txs)?;
        // Block 3: users get their tokens; swappers approve the router.
        let mut txs = Vec::new();
        let users = world.users.clone();
        for (i, u) in users.into_iter().enumerate() {
            let mut tokens = Vec::new();
            if i < spec.token_holders && !world.tokens.is_empty() {
                tokens.push(user_token(&world, i));
            }
            let swapper = i < spec.swappers && !world.pools.is_empty();
            if swapper {
                for m in [1, 10, 100, world.pools.len()] {
                    let p = user_pool(&world, i, m);
                    tokens.extend([p.a, p.b]);
                }
            }
            tokens.sort();
            tokens.dedup();
            for t in tokens {
                let data =
                    IERC20::transferCall { to: u, amount: U256::from(USER_TOKENS) }.abi_encode();
                txs.push(world.call(deployer, t, U256::ZERO, data, 100_000, Flavor::DynamicFee, 1));
                if swapper {
                    let data =
                        IERC20::approveCall { spender: router, amount: U256::MAX }.abi_encode();
                    txs.push(world.call(u, t, U256::ZERO, data, 100_000, Flavor::DynamicFee, 1));
                }
            }
        }
        world.run_setup(txs)?;
        Ok(world)
    }

    fn run_setup(&mut self, txs: Vec<RecoveredTx>) -> Result<(), ExecError> {
        let env = BlockEnv { gas_limit: u64::MAX / 2, ..self.block_env(Address::ZERO) };
        let out = execute_sequential(&self.state, &self.chain, &env, &txs)?;
        if let Some((i, t)) = out.txs.iter().enumerate().find(|(_, t)| !t.is_success()) {
            return Err(ExecError::Evm {
                index: i,
                reason: format!("setup transaction failed: {t:?}"),
            });
        }
        self.commit(&out);
        Ok(())
    }

    /// Makes `out` (a block executed on this world's state) the new state.
    pub fn commit(&mut self, out: &BlockOutput) {
        self.state.apply(&out.diff);
        self.number += 1;
    }

    /// The environment of the next block.
    pub fn block_env(&self, beneficiary: Address) -> BlockEnv {
        BlockEnv {
            number: self.number,
            timestamp: 1_700_000_000 + self.number * 2,
            beneficiary,
            base_fee: self.base_fee,
            gas_limit: 2_000_000_000,
            prevrandao: keccak256(self.number.to_be_bytes()),
            difficulty: U256::ZERO,
            excess_blob_gas: Some(0),
        }
    }

    /// The next nonce of `sender`, reserved.
    pub fn next_nonce(&mut self, sender: Address) -> u64 {
        let n = self.nonces.entry(sender).or_insert(0);
        *n += 1;
        *n - 1
    }

    /// Forgets reserved nonces (after generating a block that is thrown away).
    pub fn set_nonces(&mut self, nonces: HashMap<Address, u64>) {
        self.nonces = nonces;
    }

    /// The reserved nonces.
    pub fn nonces(&self) -> HashMap<Address, u64> {
        self.nonces.clone()
    }

    fn create(&mut self, from: Address, code: Bytes, txs: &mut Vec<RecoveredTx>) -> Address {
        let nonce = self.nonces.get(&from).copied().unwrap_or(0);
        let address = from.create(nonce);
        txs.push(self.tx(
            from,
            TxKind::Create,
            U256::ZERO,
            code,
            15_000_000,
            Flavor::DynamicFee,
            1,
        ));
        address
    }

    /// A creation transaction from `from` running `initcode` with `gas_limit`, and the address
    /// it creates.
    pub fn deploy(
        &mut self,
        from: Address,
        initcode: Bytes,
        gas_limit: u64,
    ) -> (Address, RecoveredTx) {
        let nonce = self.nonces.get(&from).copied().unwrap_or(0);
        let tx =
            self.tx(from, TxKind::Create, U256::ZERO, initcode, gas_limit, Flavor::DynamicFee, 1);
        (from.create(nonce), tx)
    }

    /// A plain ETH transfer (21,000 gas, EIP-1559, 1 gwei tip).
    pub fn transfer(&mut self, from: Address, to: Address, value: U256) -> RecoveredTx {
        self.tx(from, TxKind::Call(to), value, Bytes::new(), 21_000, Flavor::DynamicFee, 1)
    }

    /// A call from `from` to `to`.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        &mut self,
        from: Address,
        to: Address,
        value: U256,
        data: Vec<u8>,
        gas_limit: u64,
        flavor: Flavor,
        tip_gwei: u64,
    ) -> RecoveredTx {
        self.tx(from, TxKind::Call(to), value, data.into(), gas_limit, flavor, tip_gwei)
    }

    /// A transaction from `from`, with the next nonce of `from`.
    #[allow(clippy::too_many_arguments)]
    pub fn tx(
        &mut self,
        from: Address,
        to: TxKind,
        value: U256,
        input: Bytes,
        gas_limit: u64,
        flavor: Flavor,
        tip_gwei: u64,
    ) -> RecoveredTx {
        let nonce = self.next_nonce(from);
        let chain_id = self.chain.chain_id;
        let tip = tip_gwei as u128 * 1_000_000_000;
        let max_fee = self.base_fee as u128 * 2 + tip;
        let sig = placeholder_signature();
        let tx = match flavor {
            Flavor::Legacy => TxEnvelope::Legacy(
                TxLegacy {
                    chain_id: Some(chain_id),
                    nonce,
                    gas_price: self.base_fee as u128 + tip,
                    gas_limit,
                    to,
                    value,
                    input,
                }
                .into_signed(sig),
            ),
            Flavor::AccessList => {
                // Room for the access list's own intrinsic cost.
                let gas_limit = gas_limit + 10_000;
                let mut items = vec![AccessListItem { address: from, storage_keys: vec![] }];
                if let TxKind::Call(t) = to {
                    items.push(AccessListItem { address: t, storage_keys: vec![B256::ZERO] });
                }
                TxEnvelope::Eip2930(
                    TxEip2930 {
                        chain_id,
                        nonce,
                        gas_price: self.base_fee as u128 + tip,
                        gas_limit,
                        to,
                        value,
                        access_list: AccessList(items),
                        input,
                    }
                    .into_signed(sig),
                )
            }
            Flavor::DynamicFee => TxEnvelope::Eip1559(
                TxEip1559 {
                    chain_id,
                    nonce,
                    gas_limit,
                    max_fee_per_gas: max_fee,
                    max_priority_fee_per_gas: tip,
                    to,
                    value,
                    access_list: AccessList::default(),
                    input,
                }
                .into_signed(sig),
            ),
        };
        RecoveredTx { tx, sender: from }
    }

    // ---- block generators -------------------------------------------------------------------

    /// `n` ETH transfers, each from a distinct user to a fresh address: no two conflict.
    pub fn independent_transfers(&mut self, n: usize) -> Vec<RecoveredTx> {
        let start = self.number * 1_000_000;
        (0..n)
            .map(|i| {
                let from = self.users[i % self.users.len()];
                self.transfer(from, fresh_address(start + i as u64), U256::from(1000 + i))
            })
            .collect()
    }

    /// `n` ERC-20 transfers, each user sending its token to a random user.
    pub fn erc20_transfers(&mut self, n: usize, rng: &mut impl RngCore) -> Vec<RecoveredTx> {
        (0..n)
            .map(|i| {
                let u = i % self.users.len();
                let to = self.users[rng.random_range(0..self.users.len())];
                let data = IERC20::transferCall {
                    to,
                    amount: U256::from(1 + rng.random_range(0..1000u64)),
                }
                .abi_encode();
                let (from, token) = (self.users[u], user_token(self, u));
                self.call(from, token, U256::ZERO, data, 100_000, Flavor::DynamicFee, 1)
            })
            .collect()
    }

    /// `n` swaps through the router, each user in its pool among the first `pools`.
    pub fn swaps(&mut self, n: usize, pools: usize, rng: &mut impl RngCore) -> Vec<RecoveredTx> {
        let pools = pools.clamp(1, self.pools.len());
        (0..n)
            .map(|i| {
                let u = i % self.users.len();
                let p = user_pool(self, u, pools);
                let path = if rng.random_bool(0.5) { vec![p.a, p.b] } else { vec![p.b, p.a] };
                let from = self.users[u];
                let data = IRouter::swapExactTokensForTokensCall {
                    amountIn: U256::from(1_000_000 + rng.random_range(0..1_000_000u64)),
                    amountOutMin: U256::ZERO,
                    path,
                    to: from,
                    deadline: U256::MAX,
                }
                .abi_encode();
                let router = self.router;
                self.call(from, router, U256::ZERO, data, 250_000, Flavor::DynamicFee, 1)
            })
            .collect()
    }

    /// `n` transactions of which `hot_percent` touch one of a few hot accounts (transfers to
    /// them, or bumps of one shared counter); the rest are independent transfers.
    pub fn hybrid(
        &mut self,
        n: usize,
        hot_percent: u32,
        rng: &mut impl RngCore,
    ) -> Vec<RecoveredTx> {
        let start = self.number * 1_000_000;
        let hot: Vec<Address> = (0..3).map(|i| fresh_address(u64::MAX - i)).collect();
        (0..n)
            .map(|i| {
                let from = self.users[i % self.users.len()];
                if rng.random_range(0..100) < hot_percent {
                    if !self.kits.is_empty() && rng.random_bool(0.5) {
                        let kit = self.kits[0];
                        return self.call(
                            from,
                            kit,
                            U256::ZERO,
                            ITestKit::bumpCall {}.abi_encode(),
                            100_000,
                            Flavor::DynamicFee,
                            1,
                        );
                    }
                    let to = hot[rng.random_range(0..hot.len())];
                    return self.transfer(from, to, U256::from(7));
                }
                self.transfer(from, fresh_address(start + i as u64), U256::from(1))
            })
            .collect()
    }

    /// `n` transfers where each depends on the one before: one sender's chain of nonces.
    pub fn dependent_chain(&mut self, n: usize) -> Vec<RecoveredTx> {
        let from = self.users[0];
        let start = self.number * 1_000_000;
        (0..n)
            .map(|i| self.transfer(from, fresh_address(start + i as u64), U256::from(1)))
            .collect()
    }

    /// A random block mixing everything the executors must agree on: transfers among a few
    /// accounts, ERC-20 transfers, swaps on a few pools, deployments, reverts, out-of-gas,
    /// self-destruct and re-creation, precompiles, nested calls, nonce chains, balance-dependent
    /// logic, the beneficiary's own balance, and transactions from and to the beneficiary.
    /// Returns the block's environment and transactions.
    pub fn random_block(
        &mut self,
        n: usize,
        rng: &mut impl RngCore,
    ) -> (BlockEnv, Vec<RecoveredTx>) {
        // The beneficiary is sometimes a user (so it sends and receives), sometimes a kit.
        let beneficiary = match rng.random_range(0..4) {
            0 => self.users[rng.random_range(0..self.users.len().min(4))],
            1 if !self.kits.is_empty() => self.kits[0],
            2 => Address::ZERO,
            _ => fresh_address(0xbe),
        };
        let env = self.block_env(beneficiary);
        // A small pool of senders makes nonce chains and conflicts common.
        let senders = self.users.len().min(rng.random_range(2..12));
        let mut txs = Vec::with_capacity(n);
        for _ in 0..n {
            let u = rng.random_range(0..senders);
            let from = self.users[u];
            let flavor = match rng.random_range(0..4) {
                0 => Flavor::Legacy,
                1 => Flavor::AccessList,
                _ => Flavor::DynamicFee,
            };
            let tip = rng.random_range(0..3);
            let kit = if self.kits.is_empty() {
                None
            } else {
                Some(self.kits[rng.random_range(0..self.kits.len())])
            };
            // Each case is (to, value, calldata or init code, gas limit).
            let (to, value, data, gas): (TxKind, U256, Vec<u8>, u64) =
                match (rng.random_range(0..20), kit) {
                    (0..=3, _) => {
                        let to = if rng.random_bool(0.2) {
                            beneficiary
                        } else {
                            self.users[rng.random_range(0..senders)]
                        };
                        (
                            TxKind::Call(to),
                            U256::from(rng.random_range(0..1_000_000u64)),
                            Vec::new(),
                            21_000,
                        )
                    }
                    (4..=6, _) => {
                        let to = self.users[rng.random_range(0..senders)];
                        let amount = U256::from(rng.random_range(0..1_000_000u64));
                        (
                            TxKind::Call(user_token(self, u)),
                            U256::ZERO,
                            IERC20::transferCall { to, amount }.abi_encode(),
                            100_000,
                        )
                    }
                    (7..=8, _) if !self.pools.is_empty() => {
                        let p = user_pool(self, u, self.pools.len());
                        let path =
                            if rng.random_bool(0.5) { vec![p.a, p.b] } else { vec![p.b, p.a] };
                        let data = IRouter::swapExactTokensForTokensCall {
                            amountIn: U256::from(rng.random_range(0..10_000_000u64)),
                            amountOutMin: U256::ZERO,
                            path,
                            to: from,
                            deadline: U256::MAX,
                        }
                        .abi_encode();
                        // Sometimes too little gas: an out-of-gas halt inside the router.
                        let gas = if rng.random_bool(0.1) { 60_000 } else { 250_000 };
                        (TxKind::Call(self.router), U256::ZERO, data, gas)
                    }
                    (9, _) => {
                        let name = if rng.random_bool(0.5) { "TestKit" } else { "Child" };
                        let code = creation_code(name).unwrap_or_default().to_vec();
                        (TxKind::Create, U256::from(rng.random_range(0..3u64)), code, 3_000_000)
                    }
                    (10, Some(kit)) => {
                        let data = ITestKit::failCall { x: U256::from(rng.random_range(0..4u64)) }
                            .abi_encode();
                        (TxKind::Call(kit), U256::ZERO, data, 100_000)
                    }
                    (11, Some(kit)) => (
                        TxKind::Call(kit),
                        U256::ZERO,
                        ITestKit::exhaustCall {}.abi_encode(),
                        120_000,
                    ),
                    (12, Some(kit)) => {
                        let salt = B256::from(U256::from(rng.random_range(0..3u64)));
                        let to = self.users[rng.random_range(0..senders)];
                        let data = match rng.random_range(0..3) {
                            0 => ITestKit::deployAndDestroyCall { salt, beneficiary: to }
                                .abi_encode(),
                            1 => ITestKit::deployCall { salt }.abi_encode(),
                            _ => ITestKit::destroyCall { salt, beneficiary: to }.abi_encode(),
                        };
                        (TxKind::Call(kit), U256::from(rng.random_range(0..2u64)), data, 1_000_000)
                    }
                    (13, Some(kit)) => (
                        TxKind::Call(kit),
                        U256::ZERO,
                        ITestKit::snapCoinbaseCall {}.abi_encode(),
                        100_000,
                    ),
                    (14, Some(kit)) => {
                        let who = if rng.random_bool(0.3) {
                            beneficiary
                        } else {
                            self.users[rng.random_range(0..senders)]
                        };
                        let data = if rng.random_bool(0.5) {
                            ITestKit::gateCall { who, threshold: U256::from(1_000_000 * ETHER) }
                                .abi_encode()
                        } else {
                            ITestKit::snapBalanceCall { who }.abi_encode()
                        };
                        (TxKind::Call(kit), U256::ZERO, data, 100_000)
                    }
                    (15, Some(kit)) => {
                        (TxKind::Call(kit), U256::ZERO, ITestKit::bumpCall {}.abi_encode(), 100_000)
                    }
                    (16, Some(kit)) => {
                        let path: Vec<Address> = (0..rng.random_range(0..4))
                            .map(|_| self.kits[rng.random_range(0..self.kits.len())])
                            .collect();
                        let data = if rng.random_bool(0.5) {
                            ITestKit::relayCall { path }.abi_encode()
                        } else {
                            ITestKit::tryFailCall {
                                target: self.kits[0],
                                x: U256::from(rng.random_range(0..2u64)),
                            }
                            .abi_encode()
                        };
                        (TxKind::Call(kit), U256::ZERO, data, 500_000)
                    }
                    (17, Some(kit)) => {
                        let data = match rng.random_range(0..3) {
                            0 => ITestKit::hashesCall {
                                data: vec![rng.random::<u8>(); rng.random_range(0..100)].into(),
                            }
                            .abi_encode(),
                            1 => ITestKit::recoverCall {
                                hash: B256::from(U256::from(rng.random::<u64>())),
                                v: 27 + rng.random_range(0..2u8),
                                r: B256::from(U256::from(rng.random::<u64>())),
                                s: B256::from(U256::from(rng.random::<u64>())),
                            }
                            .abi_encode(),
                            _ => ITestKit::modexpCall {
                                base: U256::from(rng.random::<u64>()),
                                exponent: U256::from(rng.random::<u16>()),
                                modulus: U256::from(rng.random::<u64>() | 1),
                            }
                            .abi_encode(),
                        };
                        (TxKind::Call(kit), U256::ZERO, data, 300_000)
                    }
                    (18, Some(kit)) => {
                        let to = if rng.random_bool(0.3) {
                            beneficiary
                        } else {
                            self.users[rng.random_range(0..senders)]
                        };
                        (
                            TxKind::Call(kit),
                            U256::from(rng.random_range(0..5u64)),
                            ITestKit::payCall { to }.abi_encode(),
                            100_000,
                        )
                    }
                    _ => {
                        // Value sent to a precompile, with some input.
                        let to = Address::with_last_byte(rng.random_range(1..10u8));
                        (
                            TxKind::Call(to),
                            U256::from(rng.random_range(0..2u64)),
                            vec![1, 2, 3],
                            100_000,
                        )
                    }
                };
            // Amsterdam's intrinsic and state gas (EIP-2780, EIP-8037) need more room.
            let gas = if self.chain.spec.is_enabled_in(crate::SpecId::AMSTERDAM) {
                gas.saturating_mul(2).saturating_add(50_000)
            } else {
                gas
            };
            let tx = self.tx(from, to, value, data.into(), gas, flavor, tip);
            txs.push(tx);
        }
        (env, txs)
    }
}

/// Counts of each outcome in a block, to check that generated blocks exercise what they claim.
pub fn outcome_counts(out: &BlockOutput) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for t in &out.txs {
        let k = match &t.status {
            crate::TxStatus::Success if t.contract_address.is_some() => "create",
            crate::TxStatus::Success => "success",
            crate::TxStatus::Revert => "revert",
            crate::TxStatus::Halt(_) => "halt",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// A random number generator seeded for reproducible workloads.
pub fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(seed)
}

#[allow(dead_code)]
fn _assert_rng<R: Rng>(_: R) {}
