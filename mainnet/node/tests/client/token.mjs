// The Solidity ERC-20 the client scripts deploy: OpenZeppelin's ERC20 compiled with the
// pinned solc-js, plus a function that always reverts (to check revert reasons).

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const solc = require("solc");
const HERE = path.dirname(fileURLToPath(import.meta.url));

export function compileToken() {
  const source = `// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
contract ClientToken is ERC20 {
    constructor(uint256 supply) ERC20("Client", "CLI") { _mint(msg.sender, supply); }
    function fail() external pure { revert("nope"); }
}`;
  return compileSolidity("ClientToken", source);
}

// Compiles contract `name` from `source` (imports from node_modules) with the pinned solc.
export function compileSolidity(name, source) {
  const input = {
    language: "Solidity",
    sources: { [`${name}.sol`]: { content: source } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const findImports = (p) => {
    const file = path.join(HERE, "node_modules", p);
    return fs.existsSync(file) ? { contents: fs.readFileSync(file, "utf8") } : { error: `not found: ${p}` };
  };
  const out = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (out.errors ?? []).filter((e) => e.severity === "error");
  assert.equal(errors.length, 0, JSON.stringify(errors));
  const c = out.contracts[`${name}.sol`][name];
  return { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}` };
}

