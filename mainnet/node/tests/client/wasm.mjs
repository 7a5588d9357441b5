// The Rust ERC-20 (contracts/wasm-examples/erc20, a WebAssembly module) through viem, used
// exactly like a Solidity ERC-20: deployed with a contract-creation transaction, initialized,
// read, transferred, its events found with getLogs, its custom errors decoded, its gas
// estimated; and a Solidity contract (compiled with the pinned solc) that moves the Rust
// tokens with transferFrom, in one transaction across the two VMs.
//
//   FAROL_HTTP=http://127.0.0.1:8545 node wasm.mjs
//
// Exits non-zero on the first check that fails.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  BaseError,
  ContractFunctionRevertedError,
  createPublicClient,
  createWalletClient,
  getAddress,
  http,
  parseAbi,
  parseEventLogs,
  toHex,
  concat,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { anvil } from "viem/chains";
import { compileSolidity } from "./token.mjs";
import { step } from "./check.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const HTTP = process.env.FAROL_HTTP ?? "http://127.0.0.1:8545";
// anvil's development accounts 4 and 5 (the devnet funds the same ones).
const KEY4 = "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a";
const KEY5 = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba";

const chain = { ...anvil, rpcUrls: { default: { http: [HTTP] } } };
const pub = createPublicClient({ chain, transport: http(HTTP) });
const carol = privateKeyToAccount(KEY4);
const dave = privateKeyToAccount(KEY5);
const wallet = createWalletClient({ account: carol, chain, transport: http(HTTP) });
const daveWallet = createWalletClient({ account: dave, chain, transport: http(HTTP) });

const abi = parseAbi([
  "function name() view returns (string)",
  "function symbol() view returns (string)",
  "function decimals() view returns (uint8)",
  "function totalSupply() view returns (uint256)",
  "function balanceOf(address owner) view returns (uint256)",
  "function allowance(address owner, address spender) view returns (uint256)",
  "function transfer(address to, uint256 amount) returns (bool)",
  "function approve(address spender, uint256 amount) returns (bool)",
  "function transferFrom(address from, address to, uint256 amount) returns (bool)",
  "function initialize(uint256 supply)",
  "event Transfer(address indexed from, address indexed to, uint256 value)",
  "event Approval(address indexed owner, address indexed spender, uint256 value)",
  "error ERC20InsufficientBalance(address sender, uint256 balance, uint256 needed)",
]);

// docs/wasm.md §1: the code is the marker FE 46 57 01 and the module; the init code returns it.
const MARKER = "0xfe465701";
const modulePath = path.join(HERE, "../../../../contracts/out/erc20.wasm");
assert.ok(fs.existsSync(modulePath), `${modulePath} is missing: run bash scripts/wasm-contracts.sh`);
const code = concat([MARKER, toHex(fs.readFileSync(modulePath))]);
const size = (code.length - 2) / 2;
const initCode = concat([
  // PUSH3 size, DUP1, PUSH1 13, PUSH1 0, CODECOPY, PUSH1 0, RETURN
  `0x62${size.toString(16).padStart(6, "0")}80600d60003960` + "00f3",
  code,
]);

const wait = (hash) => pub.waitForTransactionReceipt({ hash, pollingInterval: 50, timeout: 60_000 });
const SUPPLY = 1_000_000n * 10n ** 18n;
let token;

await step("deploy the Rust ERC-20 with a creation transaction", async () => {
  const hash = await wallet.deployContract({ abi, bytecode: initCode, gas: 16_000_000n });
  const r = await wait(hash);
  assert.equal(r.status, "success");
  token = r.contractAddress;
  const stored = await pub.getCode({ address: token });
  assert.equal(stored.slice(0, 10), MARKER, "the stored code is the marked module");
  assert.equal((stored.length - 2) / 2, size);
});

await step("initialize, then read it like any ERC-20", async () => {
  const { request } = await pub.simulateContract({ account: carol, address: token, abi, functionName: "initialize", args: [SUPPLY] });
  assert.equal((await wait(await wallet.writeContract(request))).status, "success");
  const read = (functionName, args = []) => pub.readContract({ address: token, abi, functionName, args });
  assert.equal(await read("totalSupply"), SUPPLY);
  assert.equal(await read("balanceOf", [carol.address]), SUPPLY);
  assert.equal(typeof (await read("name")), "string");
  assert.equal(typeof (await read("symbol")), "string");
  assert.equal(await read("decimals"), 18);
});

await step("transfer: estimate, receipt, Transfer event, getLogs, balances", async () => {
  const amount = 1234n * 10n ** 18n;
  const gas = await pub.estimateContractGas({ account: carol, address: token, abi, functionName: "transfer", args: [dave.address, amount] });
  assert.ok(gas > 21000n && gas < 1_000_000n, `gas ${gas}`);
  const hash = await wallet.writeContract({ address: token, abi, functionName: "transfer", args: [dave.address, amount] });
  const r = await wait(hash);
  assert.equal(r.status, "success");
  assert.ok(r.gasUsed <= gas, `used ${r.gasUsed} > estimated ${gas}`);
  const [ev] = parseEventLogs({ abi, logs: r.logs, eventName: "Transfer" });
  assert.equal(ev.args.from, carol.address);
  assert.equal(ev.args.to, dave.address);
  assert.equal(ev.args.value, amount);
  const logs = await pub.getContractEvents({ address: token, abi, eventName: "Transfer", args: { to: dave.address }, fromBlock: r.blockNumber, toBlock: r.blockNumber });
  assert.equal(logs.length, 1);
  assert.equal(logs[0].transactionHash, hash);
  assert.equal(await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [dave.address] }), amount);
});

await step("an overdraft reverts with the custom error, decoded", async () => {
  try {
    await pub.simulateContract({ account: dave, address: token, abi, functionName: "transfer", args: [carol.address, 10n ** 30n] });
    assert.fail("the overdraft succeeded");
  } catch (e) {
    assert.ok(e instanceof BaseError, String(e));
    const revert = e.walk((x) => x instanceof ContractFunctionRevertedError);
    assert.ok(revert, `not a revert: ${e.shortMessage}`);
    assert.equal(revert.data?.errorName, "ERC20InsufficientBalance");
    assert.equal(revert.data.args[0], dave.address);
  }
});

await step("a Solidity contract moves the Rust tokens (EVM calling WASM)", async () => {
  const source = `// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
contract Payer {
    event Paid(address token, address to, uint256 amount, uint256 balanceAfter);
    function pay(IERC20 token, address to, uint256 amount) external returns (uint256) {
        require(token.transferFrom(msg.sender, to, amount), "transferFrom failed");
        uint256 b = token.balanceOf(to);
        emit Paid(address(token), to, amount, b);
        return b;
    }
}`;
  const payer = compileSolidity("Payer", source);
  const r = await wait(await daveWallet.deployContract({ abi: payer.abi, bytecode: payer.bytecode }));
  assert.equal(r.status, "success");
  const at = r.contractAddress;
  const amount = 34n * 10n ** 18n;
  assert.equal((await wait(await daveWallet.writeContract({ address: token, abi, functionName: "approve", args: [at, amount] }))).status, "success");
  assert.equal(await pub.readContract({ address: token, abi, functionName: "allowance", args: [dave.address, at] }), amount);
  const before = await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [carol.address] });
  const { request, result } = await pub.simulateContract({ account: dave, address: at, abi: payer.abi, functionName: "pay", args: [token, carol.address, amount] });
  assert.equal(result, before + amount);
  const pr = await wait(await daveWallet.writeContract(request));
  assert.equal(pr.status, "success");
  // Logs of both VMs in one receipt: the WASM token's Transfer, then the Solidity Paid.
  const transfers = parseEventLogs({ abi, logs: pr.logs, eventName: "Transfer" });
  assert.equal(transfers.length, 1);
  assert.equal(transfers[0].address.toLowerCase(), token.toLowerCase());
  const paid = parseEventLogs({ abi: payer.abi, logs: pr.logs, eventName: "Paid" });
  assert.equal(paid[0].args.balanceAfter, before + amount);
  assert.equal(await pub.readContract({ address: token, abi, functionName: "allowance", args: [dave.address, at] }), 0n);
  // Past the allowance: the WASM token reverts with OpenZeppelin's error, and the Solidity
  // caller's call fails with the same revert data (any other failure does not pass).
  const withError = [...payer.abi, ...parseAbi(["error ERC20InsufficientAllowance(address spender, uint256 allowance, uint256 needed)"])];
  await assert.rejects(pub.simulateContract({ account: dave, address: at, abi: withError, functionName: "pay", args: [token, carol.address, 1n] }), (e) => {
    assert.ok(e instanceof BaseError, String(e));
    const revert = e.walk((x) => x instanceof ContractFunctionRevertedError);
    assert.ok(revert, `not a revert: ${e.shortMessage}`);
    assert.equal(revert.data?.errorName, "ERC20InsufficientAllowance");
    assert.deepEqual(revert.data.args, [getAddress(at), 0n, 1n]);
    return true;
  });
});

console.log("all Rust ERC-20 checks passed");
