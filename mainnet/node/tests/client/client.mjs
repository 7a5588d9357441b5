// A real Ethereum client against a running Farol devnet, unmodified: viem (pinned in
// package-lock.json) with a local account. Compiles a Solidity ERC-20 (OpenZeppelin, solc
// pinned), deploys it, transfers, reads balances, receipts and logs, estimates gas, calls
// with a state override, subscribes to newHeads over WebSocket, watches pending
// transactions (a subscription, and a polling filter over HTTP), sends a sponsored
// EIP-7702 delegation, and deploys through the CREATE2 deployer at its usual address.
//
//   FAROL_HTTP=http://127.0.0.1:8545 FAROL_WS=ws://127.0.0.1:8546 node client.mjs
//
// Exits non-zero on the first check that fails.

import assert from "node:assert/strict";
import {
  createPublicClient,
  createWalletClient,
  http,
  webSocket,
  parseEther,
  parseAbiItem,
  encodeFunctionData,
  decodeFunctionResult,
  encodeDeployData,
  getContractAddress,
  keccak256,
  toHex,
  concat,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { anvil } from "viem/chains";
import { compileToken } from "./token.mjs";
import { step } from "./check.mjs";


const HTTP = process.env.FAROL_HTTP ?? "http://127.0.0.1:8545";
const WS = process.env.FAROL_WS ?? "ws://127.0.0.1:8546";
// anvil's first two development accounts (the devnet funds the same ones).
const KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const KEY1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

const chain = { ...anvil, rpcUrls: { default: { http: [HTTP], webSocket: [WS] } } };
const pub = createPublicClient({ chain, transport: http(HTTP) });
const alice = privateKeyToAccount(KEY0);
const bob = privateKeyToAccount(KEY1);
const wallet = createWalletClient({ account: alice, chain, transport: http(HTTP) });

let token;
let deployReceipt;
let transferReceipt;
const { abi, bytecode } = compileToken();

await step("chain id and client version", async () => {
  assert.equal(await pub.getChainId(), 31337);
  const v = await pub.request({ method: "web3_clientVersion" });
  assert.match(v, /^farol\//);
  // viem's own calls of the newer methods: no block carries blobs, so the least blob fee.
  assert.equal(await pub.getBlobBaseFee(), 1n);
});

await step("newHeads subscription delivers heads", async () => {
  const wsClient = createPublicClient({ chain, transport: webSocket(WS) });
  const heads = [];
  const unwatch = wsClient.watchBlocks({ onBlock: (b) => heads.push(b), emitOnBegin: false });
  // A transfer makes a block.
  const hash = await wallet.sendTransaction({ to: bob.address, value: 1n });
  await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  const deadline = Date.now() + 15000;
  while (heads.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  unwatch();
  assert.ok(heads.length > 0, "no head arrived");
  assert.ok(heads[0].hash && heads[0].stateRoot && typeof heads[0].number === "bigint");
  await wsClient.transport.getRpcClient().then((c) => c.close()).catch(() => {});
});

await step("pending transactions: subscription and polling filter", async () => {
  const wsClient = createPublicClient({ chain, transport: webSocket(WS) });
  const viaWs = [];
  const viaHttp = [];
  const unwatchWs = wsClient.watchPendingTransactions({ onTransactions: (h) => viaWs.push(...h) });
  const unwatchHttp = pub.watchPendingTransactions({ onTransactions: (h) => viaHttp.push(...h), pollingInterval: 50 });
  // The watchers install themselves in the background (the subscription's answer, the
  // filter made on the first poll), and a transaction is announced once, when admitted: one
  // sent before both are in place is missed by one of them. So a transaction is sent, and
  // if one watcher misses it, another (a fixed wait of 300 ms was too short on a loaded
  // machine now and then).
  const sent = [];
  let both = null;
  for (let attempt = 0; attempt < 5 && both === null; attempt++) {
    await new Promise((r) => setTimeout(r, 300));
    const hash = await wallet.sendTransaction({ to: bob.address, value: 2n });
    sent.push(hash);
    const deadline = Date.now() + 3000;
    while ((!viaWs.includes(hash) || !viaHttp.includes(hash)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (viaWs.includes(hash) && viaHttp.includes(hash)) both = hash;
  }
  unwatchWs();
  unwatchHttp();
  assert.ok(both !== null, `not announced to both: sent ${sent}, over WebSocket ${viaWs}, to the filter ${viaHttp}`);
  for (const hash of sent) await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  await wsClient.transport.getRpcClient().then((c) => c.close()).catch(() => {});
});

await step("sendTransactionSync: the receipt in one call (EIP-7966)", async () => {
  const before = await pub.getBalance({ address: bob.address });
  // A local account: viem signs and calls eth_sendRawTransactionSync.
  // 30 s for the node to answer (viem asks for 5 s by default: a loaded machine came close).
  const r = await wallet.sendTransactionSync({ to: bob.address, value: 3n, timeout: 30_000 });
  assert.equal(r.status, "success");
  assert.equal(r.from.toLowerCase(), alice.address.toLowerCase());
  assert.equal(await pub.getBalance({ address: bob.address }), before + 3n);
  const stored = await pub.getTransactionReceipt({ hash: r.transactionHash });
  assert.equal(stored.blockHash, r.blockHash);
});

await step("ether transfer: balance, receipt, gas", async () => {
  const before = await pub.getBalance({ address: bob.address });
  const gas = await pub.estimateGas({ account: alice, to: bob.address, value: parseEther("1") });
  assert.equal(gas, 21000n);
  const hash = await wallet.sendTransaction({ to: bob.address, value: parseEther("1") });
  const r = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  assert.equal(r.status, "success");
  assert.equal(r.gasUsed, 21000n);
  assert.equal(r.from.toLowerCase(), alice.address.toLowerCase());
  assert.equal(await pub.getBalance({ address: bob.address }), before + parseEther("1"));
  const tx = await pub.getTransaction({ hash });
  assert.equal(tx.blockNumber, r.blockNumber);
  const block = await pub.getBlock({ blockNumber: r.blockNumber });
  assert.ok(block.transactions.includes(hash));
});

await step("deploy a Solidity ERC-20", async () => {
  const hash = await wallet.deployContract({ abi, bytecode, args: [1_000_000n] });
  deployReceipt = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  assert.equal(deployReceipt.status, "success");
  token = deployReceipt.contractAddress;
  assert.ok(token);
  const code = await pub.getCode({ address: token });
  assert.ok(code && code.length > 100);
  assert.equal(await pub.readContract({ address: token, abi, functionName: "symbol" }), "CLI");
  assert.equal(await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [alice.address] }), 1_000_000n);
});

await step("a salted deployment through the CREATE2 deployer, as forge script makes", async () => {
  // The devnet's genesis holds the deterministic deployer where anvil's does: the call's
  // data is a salt and init code, its answer the new contract's 20 bytes.
  const deployer = "0x4e59b44847b379578588920ca78fbf26c0b4956c";
  // Its code is the one Foundry checks for (by hash) before it deploys through it.
  const code = await pub.getCode({ address: deployer });
  assert.equal(keccak256(code ?? "0x"), "0x2fa86add0aed31f33a762c9d88e807c475bd51d0f52bd0955754b2608f7e4989");
  const init = encodeDeployData({ abi, bytecode, args: [7n] });
  const salt = keccak256(toHex("farol"));
  const expected = getContractAddress({ opcode: "CREATE2", from: deployer, salt, bytecode: init });
  const data = concat([salt, init]);
  const { data: answer } = await pub.call({ account: alice, to: deployer, data });
  assert.equal(answer?.toLowerCase(), expected.toLowerCase());
  const gas = await pub.estimateGas({ account: alice, to: deployer, data });
  const hash = await wallet.sendTransaction({ to: deployer, data, gas });
  const r = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  assert.equal(r.status, "success");
  assert.equal(await pub.readContract({ address: expected, abi, functionName: "symbol" }), "CLI");
  // The constructor minted to its caller: the deployer.
  assert.equal(await pub.readContract({ address: expected, abi, functionName: "balanceOf", args: [deployer] }), 7n);
  // The same salt again: the address is taken, and the call reverts.
  await assert.rejects(pub.call({ account: alice, to: deployer, data }));
});

await step("token transfer: estimate, receipt, logs, balances", async () => {
  const gas = await pub.estimateContractGas({ address: token, abi, functionName: "transfer", args: [bob.address, 250n], account: alice });
  assert.ok(gas > 21000n && gas < 100000n, `gas ${gas}`);
  const { request } = await pub.simulateContract({ address: token, abi, functionName: "transfer", args: [bob.address, 250n], account: alice });
  const hash = await wallet.writeContract(request);
  const r = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  transferReceipt = r;
  assert.equal(r.status, "success");
  assert.ok(r.gasUsed <= gas, `used ${r.gasUsed} > estimated ${gas}`);
  assert.equal(r.logs.length, 1);
  assert.equal(r.logs[0].address.toLowerCase(), token.toLowerCase());
  const transfer = parseAbiItem("event Transfer(address indexed from, address indexed to, uint256 value)");
  const logs = await pub.getLogs({ address: token, event: transfer, args: { to: bob.address }, fromBlock: deployReceipt.blockNumber, toBlock: "latest" });
  assert.equal(logs.length, 1);
  assert.equal(logs[0].args.value, 250n);
  assert.equal(logs[0].transactionHash, hash);
  assert.equal(await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [bob.address] }), 250n);
  assert.equal(await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [alice.address] }), 1_000_000n - 250n);
});

await step("reverted call carries the reason", async () => {
  await assert.rejects(
    pub.readContract({ address: token, abi, functionName: "fail" }),
    (e) => /nope/.test(String(e?.shortMessage ?? e?.message)),
  );
});

await step("eth_call with a state override", async () => {
  const data = encodeFunctionData({ abi, functionName: "balanceOf", args: [bob.address] });
  // Slot of _balances[bob] in OpenZeppelin's ERC20 (mapping at slot 0).
  const { keccak256, encodeAbiParameters } = await import("viem");
  const slot = keccak256(encodeAbiParameters([{ type: "address" }, { type: "uint256" }], [bob.address, 0n]));
  const value = "0x" + (777n).toString(16).padStart(64, "0");
  const out = await pub.call({ to: token, data, stateOverride: [{ address: token, stateDiff: [{ slot, value }] }] });
  assert.equal(decodeFunctionResult({ abi, functionName: "balanceOf", data: out.data }), 777n);
});

await step("debug traces and an access list of the token", async () => {
  const hash = transferReceipt.transactionHash;
  const t = await pub.request({
    method: "debug_traceTransaction",
    params: [hash, { tracer: "callTracer", tracerConfig: { withLog: true } }],
  });
  assert.equal(t.type, "CALL");
  assert.equal(t.to.toLowerCase(), token.toLowerCase());
  assert.equal(BigInt(t.gasUsed), transferReceipt.gasUsed);
  assert.equal(t.logs.length, 1);
  assert.equal(t.input.slice(0, 10), encodeFunctionData({ abi, functionName: "transfer", args: [bob.address, 250n] }).slice(0, 10));
  const logs = await pub.request({ method: "debug_traceTransaction", params: [hash, {}] });
  assert.equal(BigInt(logs.gas), transferReceipt.gasUsed);
  assert.ok(logs.structLogs.some((s) => s.op === "SSTORE"));
  const block = await pub.request({
    method: "debug_traceBlockByNumber",
    params: [`0x${transferReceipt.blockNumber.toString(16)}`, { tracer: "callTracer" }],
  });
  assert.ok(block.some((e) => e.txHash === hash));
  // A reverted call: the frame names the error and the reason.
  const data = encodeFunctionData({ abi, functionName: "fail" });
  const f = await pub.request({
    method: "debug_traceCall",
    params: [{ from: alice.address, to: token, data }, "latest", { tracer: "callTracer" }],
  });
  assert.equal(f.error, "execution reverted");
  assert.equal(f.revertReason, "nope");
  // viem's createAccessList: the sender's and bob's balance slots of the token.
  const transfer = encodeFunctionData({ abi, functionName: "transfer", args: [bob.address, 1n] });
  const { accessList, gasUsed } = await pub.createAccessList({ account: alice, to: token, data: transfer });
  assert.equal(accessList.length, 1, JSON.stringify(accessList));
  assert.equal(accessList[0].address.toLowerCase(), token.toLowerCase());
  assert.equal(accessList[0].storageKeys.length, 2);
  assert.ok(gasUsed > 21000n);
  // viem's simulateCalls (eth_simulateV1): a transfer, then a read that sees it, in one
  // simulated block; nothing is sent.
  const balanceOf = { to: token, abi, functionName: "balanceOf", args: [bob.address] };
  const before = await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [bob.address] });
  const { results } = await pub.simulateCalls({
    account: alice.address,
    calls: [{ to: token, abi, functionName: "transfer", args: [bob.address, 5n] }, balanceOf],
  });
  assert.equal(results.length, 2, JSON.stringify(results, (_, v) => (typeof v === "bigint" ? `${v}` : v)));
  assert.equal(results[0].status, "success");
  assert.equal(results[0].logs.length, 1);
  assert.equal(results[1].result, before + 5n);
  const after = await pub.readContract({ address: token, abi, functionName: "balanceOf", args: [bob.address] });
  assert.equal(after, before);
});

await step("nonce gap is held, then filled", async () => {
  const nonce = await pub.getTransactionCount({ address: bob.address, blockTag: "pending" });
  const bobWallet = createWalletClient({ account: bob, chain, transport: http(HTTP) });
  const later = await bobWallet.sendTransaction({ to: alice.address, value: 1n, nonce: nonce + 1, gas: 21000n });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await pub.request({ method: "eth_getTransactionReceipt", params: [later] }), null);
  const first = await bobWallet.sendTransaction({ to: alice.address, value: 1n, nonce, gas: 21000n });
  for (const h of [first, later]) {
    const r = await pub.waitForTransactionReceipt({ hash: h, pollingInterval: 50 });
    assert.equal(r.status, "success");
  }
});

await step("EIP-7702: a sponsored delegation, and the signer's next nonce after it", async () => {
  // Carol, a fresh account, delegates to the token's code; Bob sends her authorization and
  // pays for it. Carol's own transfer is sent at once with the nonce after the one her
  // authorization takes: the pool holds it behind the gap until the block that applies the
  // authorization, then hands it on.
  const { generatePrivateKey } = await import("viem/accounts");
  const carol = privateKeyToAccount(generatePrivateKey());
  const funded = await wallet.sendTransaction({ to: carol.address, value: parseEther("1") });
  await pub.waitForTransactionReceipt({ hash: funded, pollingInterval: 50 });
  const carolWallet = createWalletClient({ account: carol, chain, transport: http(HTTP) });
  const bobWallet = createWalletClient({ account: bob, chain, transport: http(HTTP) });
  const authorization = await carolWallet.signAuthorization({ contractAddress: token });
  assert.equal(authorization.nonce, 0);
  // A call of a view function: Carol's account runs the token's code over her own storage.
  const data = encodeFunctionData({ abi, functionName: "totalSupply" });
  const sponsored = await bobWallet.sendTransaction({ authorizationList: [authorization], to: carol.address, data });
  const own = await carolWallet.sendTransaction({ to: bob.address, value: 1n, nonce: 1, gas: 21000n });
  for (const hash of [sponsored, own]) {
    const r = await pub.waitForTransactionReceipt({ hash, pollingInterval: 50, timeout: 30_000 });
    assert.equal(r.status, "success", `${hash}: ${r.status}`);
  }
  const code = await pub.getCode({ address: carol.address });
  assert.equal(code?.toLowerCase(), "0xef0100" + token.slice(2).toLowerCase());
  assert.equal(await pub.getTransactionCount({ address: carol.address }), 2);
});

await step("finality tiers: the transfer becomes block-final", async () => {
  const hash = await wallet.sendTransaction({ to: bob.address, value: 2n });
  await pub.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  const deadline = Date.now() + 20000;
  let s;
  do {
    s = await pub.request({ method: "farol_transactionStatus", params: [hash] });
    if (s.status === "final") break;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() < deadline);
  assert.equal(s.status, "final", JSON.stringify(s));
  const fin = await pub.getBlock({ blockTag: "finalized" });
  assert.ok(fin.number >= BigInt(s.blockNumber));
});

await step("fee history and gas price", async () => {
  const h = await pub.getFeeHistory({ blockCount: 4, rewardPercentiles: [25, 75] });
  assert.equal(h.baseFeePerGas.length, h.gasUsedRatio.length + 1);
  assert.ok((await pub.getGasPrice()) > 0n);
});

console.log("client test: all checks passed");
process.exit(0);
