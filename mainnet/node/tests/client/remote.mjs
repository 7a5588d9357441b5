// The devnet's development accounts, signed for by the node as anvil and Hardhat's node do:
// Hardhat's `remote` network (no keys configured, like its `localhost`) lists them with
// eth_accounts, deploys and transfers through eth_sendTransaction, signs a message
// (personal_sign) and EIP-712 typed data (eth_signTypedData_v4); viem's JSON-RPC account does
// the same. Every signature is checked against the account's address.
//
//   FAROL_HTTP=http://127.0.0.1:8545 npx hardhat run --network remote --no-compile remote.mjs
//
// Exits non-zero on the first check that fails.

import assert from "node:assert/strict";
import hre from "hardhat";
import { createPublicClient, createWalletClient, http, parseEther, verifyMessage, verifyTypedData } from "viem";
import { anvil } from "viem/chains";
import { compileToken } from "./token.mjs";
import { step } from "./check.mjs";

const { ethers } = hre;
const label = "remote: ";
const HTTP = process.env.FAROL_HTTP ?? "http://127.0.0.1:8545";
// anvil's development accounts 8 and 9 (the other scripts use 0 to 7).
const ACCOUNT8 = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f";
const ACCOUNT9 = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720";
const signers = await ethers.getSigners();
const { abi, bytecode } = compileToken();

await step("eth_accounts lists the devnet's ten accounts", async () => {
  assert.equal(hre.network.name, "remote");
  assert.equal(signers.length, 10);
  assert.equal(signers[0].address, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
  assert.equal(signers[8].address, ACCOUNT8);
  assert.equal(signers[9].address, ACCOUNT9);
}, label);

const owner = signers[8];
const other = signers[9];

await step("deploy and transfer an ERC-20, the node signing", async () => {
  const factory = new ethers.ContractFactory(abi, bytecode, owner);
  const token = await factory.deploy(ethers.parseEther("100"));
  await token.waitForDeployment();
  assert.equal(await token.balanceOf(owner.address), ethers.parseEther("100"));
  const r = await (await token.transfer(other.address, ethers.parseEther("2"))).wait();
  assert.equal(r.status, 1);
  assert.equal(r.from, owner.address);
  assert.equal(await token.balanceOf(other.address), ethers.parseEther("2"));
}, label);

await step("an ether transfer and a legacy-priced one", async () => {
  const before = await ethers.provider.getBalance(other.address);
  await (await owner.sendTransaction({ to: other.address, value: ethers.parseEther("1") })).wait();
  const gasPrice = await ethers.provider.send("eth_gasPrice", []);
  const r = await (await owner.sendTransaction({ to: other.address, value: 5n, gasPrice, type: 0 })).wait();
  assert.equal(r.type, 0);
  assert.equal(await ethers.provider.getBalance(other.address), before + ethers.parseEther("1") + 5n);
}, label);

await step("personal_sign and eth_signTypedData_v4", async () => {
  const sig = await owner.signMessage("hello from farol");
  assert.equal(ethers.verifyMessage("hello from farol", sig), owner.address);
  const domain = { name: "Permit", version: "1", chainId: 31337, verifyingContract: ACCOUNT9 };
  const types = { Permit: [{ name: "owner", type: "address" }, { name: "value", type: "uint256" }, { name: "deadline", type: "uint256" }] };
  const value = { owner: owner.address, value: 1000n, deadline: 1n << 40n };
  const typed = await owner.signTypedData(domain, types, value);
  assert.equal(ethers.verifyTypedData(domain, types, value, typed), owner.address);
}, label);

await step("viem's JSON-RPC account: send and sign", async () => {
  const wallet = createWalletClient({ account: ACCOUNT9, chain: anvil, transport: http(HTTP) });
  const client = createPublicClient({ chain: anvil, transport: http(HTTP) });
  const hash = await wallet.sendTransaction({ to: ACCOUNT8, value: parseEther("0.25") });
  const r = await client.waitForTransactionReceipt({ hash, pollingInterval: 50 });
  assert.equal(r.status, "success");
  assert.equal(r.from.toLowerCase(), ACCOUNT9.toLowerCase());
  const signature = await wallet.signMessage({ message: "viem" });
  assert.ok(await verifyMessage({ address: ACCOUNT9, message: "viem", signature }));
  const domain = { name: "Mail", chainId: 31337 };
  const types = { Mail: [{ name: "contents", type: "string" }] };
  const typed = await wallet.signTypedData({ domain, types, primaryType: "Mail", message: { contents: "hi" } });
  assert.ok(await verifyTypedData({ address: ACCOUNT9, domain, types, primaryType: "Mail", message: { contents: "hi" }, signature: typed }));
}, label);

await step("an account the node holds no key for is refused", async () => {
  await assert.rejects(
    // With its gas given: without, Hardhat asks eth_estimateGas first, which fails for an
    // account holding nothing.
    ethers.provider.send("eth_sendTransaction", [{ from: "0x0000000000000000000000000000000000000001", to: ACCOUNT8, gas: "0x5208" }]),
    /unknown account/,
  );
}, label);
