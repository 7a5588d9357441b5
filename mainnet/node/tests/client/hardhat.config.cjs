// Hardhat (pinned in package-lock.json) pointed at a Farol devnet like at any Ethereum node:
// the devnet's URL, chain id 31337 and two of anvil's development keys. Nothing is compiled
// by Hardhat here (the machine has no access to its compiler downloads): the scripts compile
// with the pinned solc-js and run with `hardhat run --no-compile`. The `remote` network holds
// no keys: the devnet's nodes sign for their development accounts, as anvil's do.
require("@nomicfoundation/hardhat-ethers");

module.exports = {
  solidity: "0.8.28",
  defaultNetwork: "farol",
  networks: {
    farol: {
      url: process.env.FAROL_HTTP ?? "http://127.0.0.1:8545",
      chainId: 31337,
      // anvil's development accounts 6 and 7 (the devnet funds the same ones).
      accounts: [
        "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
        "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
      ],
    },
    // As Hardhat's own `localhost` network: no keys here, the node's accounts
    // (eth_accounts) sign (eth_sendTransaction, personal_sign, eth_signTypedData_v4).
    remote: {
      url: process.env.FAROL_HTTP ?? "http://127.0.0.1:8545",
    },
  },
};
