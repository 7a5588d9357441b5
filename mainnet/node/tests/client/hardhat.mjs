// Hardhat's runtime (hre.ethers from @nomicfoundation/hardhat-ethers) against a Farol devnet:
// the network answers, the configured accounts are funded, a Solidity ERC-20 deploys, a
// transfer is estimated, sent and mined, its event is found with queryFilter, balances and
// blocks read back.
//
//   FAROL_HTTP=http://127.0.0.1:8545 npx hardhat run --no-compile hardhat.mjs
//
// Exits non-zero on the first check that fails.

import assert from "node:assert/strict";
import hre from "hardhat";
import { compileToken } from "./token.mjs";
import { step } from "./check.mjs";

const { ethers } = hre;
const label = "hardhat: ";
const [owner, other] = await ethers.getSigners();
const { abi, bytecode } = compileToken();
let token;

await step("network, accounts", async () => {
  assert.equal(hre.network.name, "farol");
  assert.equal(await hre.network.provider.send("eth_chainId"), "0x7a69");
  assert.equal((await ethers.provider.getNetwork()).chainId, 31337n);
  assert.ok((await ethers.provider.getBalance(owner.address)) > ethers.parseEther("1"));
}, label);

await step("deploy an ERC-20 with a ContractFactory", async () => {
  const factory = new ethers.ContractFactory(abi, bytecode, owner);
  token = await factory.deploy(ethers.parseEther("1000"));
  await token.waitForDeployment();
  assert.ok((await ethers.provider.getCode(await token.getAddress())).length > 2);
  assert.equal(await token.balanceOf(owner.address), ethers.parseEther("1000"));
}, label);

await step("transfer: estimate, send, wait, event, balances", async () => {
  const amount = ethers.parseEther("12.5");
  const gas = await token.transfer.estimateGas(other.address, amount);
  assert.ok(gas > 21000n, `gas ${gas}`);
  const tx = await token.transfer(other.address, amount);
  const r = await tx.wait();
  assert.equal(r.status, 1);
  const events = await token.queryFilter(token.filters.Transfer(owner.address, other.address), r.blockNumber, r.blockNumber);
  assert.equal(events.length, 1);
  assert.equal(events[0].args.value, amount);
  assert.equal(await token.balanceOf(other.address), amount);
  const block = await ethers.provider.getBlock(r.blockNumber);
  assert.equal(block.hash, r.blockHash);
  assert.ok(await ethers.provider.getBlockNumber() >= r.blockNumber);
}, label);

await step("a revert reason reaches the caller", async () => {
  await assert.rejects(token.fail(), (e) => /nope/.test(String(e?.reason ?? e?.shortMessage ?? e)));
}, label);

console.log("all hardhat checks passed");
