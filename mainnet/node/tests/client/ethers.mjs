// ethers v6 (pinned in package-lock.json), unmodified, against a running Farol devnet:
// deploys the ERC-20 with a ContractFactory, transfers, reads balances, queries and polls
// events (eth_newFilter / eth_getFilterChanges), estimates gas, reads fee data; sends and
// signs through a JsonRpcSigner of the node's own account.
//
//   FAROL_HTTP=http://127.0.0.1:8545 node ethers.mjs

import assert from "node:assert/strict";
import { ContractFactory, JsonRpcProvider, Wallet, parseEther, verifyMessage } from "ethers";
import { compileToken } from "./token.mjs";
import { step as check } from "./check.mjs";

const HTTP = process.env.FAROL_HTTP ?? "http://127.0.0.1:8545";
// anvil's third and fourth development accounts (the viem script uses the first two).
const KEY2 = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
const KEY3 = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";

// ethers shares identical requests made within `cacheTimeout` (250 ms by default). A devnet
// confirms in about 100 ms, so a nonce or balance read again right after a receipt would be
// the cached answer from before it; as with anvil's instant mining, turn the cache off.
const provider = new JsonRpcProvider(HTTP, undefined, { pollingInterval: 50, cacheTimeout: -1 });
if (process.env.FAROL_DEBUG) provider.on("debug", (e) => console.error(JSON.stringify(e.payload ?? e.result ?? e.error ?? e.action).slice(0, 300)));
const carol = new Wallet(KEY2, provider);
const dave = new Wallet(KEY3, provider);

const step = (name, f) => check(name, f, "ethers: ");

const { abi, bytecode } = compileToken();
let token;

await step("network and fee data", async () => {
  const net = await provider.getNetwork();
  assert.equal(net.chainId, 31337n);
  const fees = await provider.getFeeData();
  assert.ok(fees.maxFeePerGas > 0n);
  assert.ok((await provider.getBlockNumber()) >= 0);
});

await step("ether transfer and receipt", async () => {
  const before = await provider.getBalance(dave.address);
  const tx = await carol.sendTransaction({ to: dave.address, value: parseEther("0.5") });
  const r = await tx.wait();
  assert.equal(r.status, 1);
  assert.equal(await provider.getBalance(dave.address), before + parseEther("0.5"));
});

await step("deploy with a ContractFactory", async () => {
  const factory = new ContractFactory(abi, bytecode, carol);
  token = await factory.deploy(5000n);
  await token.waitForDeployment();
  assert.equal(await token.balanceOf(carol.address), 5000n);
});

await step("token transfer, events by query and by polling filter", async () => {
  const seen = new Promise((resolve) => token.once("Transfer", (from, to, value) => resolve({ from, to, value })));
  const gas = await token.transfer.estimateGas(dave.address, 70n);
  assert.ok(gas > 21000n);
  const r = await (await token.transfer(dave.address, 70n)).wait();
  assert.equal(r.status, 1);
  assert.equal(await token.balanceOf(dave.address), 70n);
  const events = await token.queryFilter(token.filters.Transfer(carol.address, dave.address), r.blockNumber, r.blockNumber);
  assert.equal(events.length, 1);
  assert.equal(events[0].args.value, 70n);
  // The filter was installed before the transfer; its first Transfer may be the transfer.
  const e = await Promise.race([seen, new Promise((_, no) => setTimeout(() => no(new Error("no event")), 15000))]);
  assert.equal(e.to, dave.address);
  await token.removeAllListeners();
});

await step("revert reason", async () => {
  await assert.rejects(token.fail(), (e) => /nope/.test(String(e?.reason ?? e?.message)));
});

await step("the node's account through a JsonRpcSigner", async () => {
  // The devnet's nodes hold its accounts' keys (eth_accounts, eth_sendTransaction).
  const accounts = await provider.listAccounts();
  assert.equal(accounts.length, 10);
  const signer = await provider.getSigner(dave.address);
  const before = await provider.getBalance(carol.address);
  const tx = await signer.sendTransaction({ to: carol.address, value: 11n });
  const r = await tx.wait();
  assert.equal(r.status, 1);
  assert.equal(r.from, dave.address);
  assert.equal(await provider.getBalance(carol.address), before + 11n);
  const sig = await signer.signMessage("ethers");
  assert.equal(verifyMessage("ethers", sig), dave.address);
});

console.log("ethers test: all checks passed");
process.exit(0);
