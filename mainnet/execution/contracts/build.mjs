// Builds mainnet/execution/contracts/artifacts.json: the EVM bytecode fixtures
// that farol-execution embeds for its tests and benchmarks.
//
//   node build.mjs          compile and (re)write artifacts.json
//   node build.mjs --check  compile in memory; exit 1 if artifacts.json is stale
//
// Inputs are only the sources in src/ and the exactly pinned npm packages in
// package-lock.json (install them with `npm ci`; see scripts/contracts.sh).

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");
const { keccak256 } = require("js-sha3");

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_MODULES = path.join(HERE, "node_modules");
const OUT_FILE = path.join(HERE, "artifacts.json");

// Our sources, compiled with the pinned solc-js.
const SOURCES = ["src/FarolToken.sol", "src/TestKit.sol", "src/WasmInterop.sol", "src/OptionPricer.sol"];
// Contracts of ours that go into artifacts.json (file -> names).
const OWN_CONTRACTS = {
  "src/FarolToken.sol": ["FarolToken"],
  "src/TestKit.sol": ["TestKit", "Child"],
  "src/WasmInterop.sol": ["TokenUser", "HookReceiver", "CallLoop"],
  "src/OptionPricer.sol": ["OptionPricer"],
};
// bytecodeHash "none": the appended metadata omits the source hash, so editing a comment
// does not change any bytecode (nor the CREATE2 address of Child).
const SETTINGS = { optimizer: { enabled: true, runs: 200 }, evmVersion: "cancun", metadata: { bytecodeHash: "none" } };

// Prebuilt Uniswap artifacts shipped inside the npm packages (package, file in the package).
const PREBUILT = {
  UniswapV2Factory: ["@uniswap/v2-core", "build/UniswapV2Factory.json"],
  UniswapV2Pair: ["@uniswap/v2-core", "build/UniswapV2Pair.json"],
  UniswapV2Router02: ["@uniswap/v2-periphery", "build/UniswapV2Router02.json"],
  WETH9: ["@uniswap/v2-periphery", "build/WETH9.json"],
};
// Pair init-code hash hardcoded in UniswapV2Library.pairFor (and thus in UniswapV2Router02).
const EXPECTED_PAIR_INIT_CODE_HASH = "0x96e8ac4277198ff8b6f785478aa9a39f403cb768dd02cbee326c3e7da348845f";

function fail(msg) {
  console.error(`contracts/build.mjs: ${msg}`);
  process.exit(1);
}

const hex = (s) => (s.startsWith("0x") ? s.slice(2) : s).toLowerCase();
const keccakHex = (hexStr) => "0x" + keccak256(Buffer.from(hex(hexStr), "hex"));

// Installed versions must be exactly the pinned ones (guards against a stale node_modules).
function checkedVersions() {
  const pkg = JSON.parse(fs.readFileSync(path.join(HERE, "package.json"), "utf8"));
  const versions = {};
  for (const [name, want] of Object.entries(pkg.devDependencies)) {
    const file = path.join(NODE_MODULES, name, "package.json");
    if (!fs.existsSync(file)) fail(`${name} is not installed; run \`bash scripts/contracts.sh\` (npm ci) first`);
    const have = JSON.parse(fs.readFileSync(file, "utf8")).version;
    if (have !== want) fail(`${name} ${have} is installed but package.json pins ${want}; run npm ci`);
    versions[name] = have;
  }
  return versions;
}

// Resolves `import "..."` against our folder first, then node_modules; never outside them.
function findImports(importPath) {
  for (const root of [HERE, NODE_MODULES]) {
    const file = path.resolve(root, importPath);
    if (!file.startsWith(root + path.sep)) continue;
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, "utf8") };
  }
  return { error: `import not found: ${importPath}` };
}

// Canonical ABI type, expanding tuples, for selector / topic computation.
function canonicalType(param) {
  if (!param.type.startsWith("tuple")) return param.type;
  return `(${param.components.map(canonicalType).join(",")})${param.type.slice("tuple".length)}`;
}
const signature = (item) => `${item.name}(${item.inputs.map(canonicalType).join(",")})`;

// "fn(types)" -> 4-byte selector, and "Event(types)" -> topic0.
function abiIndex(abi) {
  const selectors = {};
  const events = {};
  for (const item of abi) {
    if (item.type === "function") selectors[signature(item)] = "0x" + keccak256(signature(item)).slice(0, 8);
    if (item.type === "event") events[signature(item)] = "0x" + keccak256(signature(item));
  }
  return { selectors, events };
}

// Entry of artifacts.json. The runtime code is left out when the contract has
// immutables: the stored runtime would then hold zero placeholders, not real code.
function entry({ source, compiler, abi, creation, runtime, immutables }) {
  if (!creation || !/^[0-9a-f]+$/.test(hex(creation))) fail(`${source}: missing or linked creation bytecode`);
  const e = { source, compiler, abi, ...abiIndex(abi), creation: "0x" + hex(creation), creationHash: keccakHex(creation) };
  if (immutables) e.runtimeOmitted = "runtime code has immutables filled in by the constructor; deploy `creation` instead";
  else e.runtime = "0x" + hex(runtime);
  return e;
}

function compileOwn(versions) {
  const input = {
    language: "Solidity",
    sources: Object.fromEntries(SOURCES.map((s) => [s, { content: fs.readFileSync(path.join(HERE, s), "utf8") }])),
    settings: {
      ...SETTINGS,
      outputSelection: {
        "*": {
          "*": ["abi", "evm.bytecode.object", "evm.bytecode.linkReferences", "evm.deployedBytecode.object", "evm.deployedBytecode.immutableReferences"],
        },
      },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const w of (output.errors || []).filter((e) => e.severity !== "error")) {
    // selfdestruct is deprecated but is exactly what TestKit's Child exercises.
    if (!/selfdestruct/.test(w.message)) console.error(w.formattedMessage);
  }
  if (errors.length) fail("solc errors:\n" + errors.map((e) => e.formattedMessage).join("\n"));

  const compiler = `solc ${solc.version()} (solc-js ${versions.solc}), optimizer 200 runs, evmVersion cancun, metadata bytecodeHash none`;
  const out = {};
  for (const [file, names] of Object.entries(OWN_CONTRACTS)) {
    for (const name of names) {
      const c = output.contracts?.[file]?.[name];
      if (!c) fail(`solc produced no ${name} in ${file}`);
      if (Object.keys(c.evm.bytecode.linkReferences).length) fail(`${name} needs library linking`);
      const source =
        name === "FarolToken"
          ? `${file} (ERC-20 logic: @openzeppelin/contracts@${versions["@openzeppelin/contracts"]} token/ERC20/ERC20.sol)`
          : file;
      out[name] = entry({
        source,
        compiler,
        abi: c.abi,
        creation: c.evm.bytecode.object,
        runtime: c.evm.deployedBytecode.object,
        immutables: Object.keys(c.evm.deployedBytecode.immutableReferences || {}).length > 0,
      });
    }
  }
  return out;
}

function loadPrebuilt(versions) {
  const out = {};
  for (const [name, [pkg, file]] of Object.entries(PREBUILT)) {
    const full = path.join(NODE_MODULES, pkg, file);
    if (!fs.existsSync(full)) fail(`${pkg}@${versions[pkg]} does not ship ${file}`);
    const j = JSON.parse(fs.readFileSync(full, "utf8"));
    if (Object.keys(j.evm.bytecode.linkReferences || {}).length) fail(`${name} needs library linking`);
    let compiler = "prebuilt by the package (no metadata)";
    if (j.metadata) {
      const m = JSON.parse(j.metadata);
      compiler = `solc ${m.compiler.version}, optimizer ${m.settings.optimizer.runs} runs, evmVersion ${m.settings.evmVersion} (prebuilt by the package)`;
    }
    out[name] = entry({
      source: `${pkg}@${versions[pkg]} ${file}`,
      compiler,
      abi: j.abi,
      creation: j.evm.bytecode.object,
      runtime: j.evm.deployedBytecode.object,
      immutables: Object.keys(j.evm.deployedBytecode.immutableReferences || {}).length > 0,
    });
  }
  return out;
}

// Recursively sorts object keys so that the output does not depend on insertion order.
function sortKeys(v) {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === "object") return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
  return v;
}

function build() {
  const versions = checkedVersions();
  if (!solc.version().startsWith(versions.solc + "+")) fail(`solc-js reports ${solc.version()}, expected ${versions.solc}`);
  const contracts = { ...compileOwn(versions), ...loadPrebuilt(versions) };

  const pairHash = contracts.UniswapV2Pair.creationHash;
  const uniswap = {
    pairInitCodeHash: pairHash,
    expectedInitCodeHash: EXPECTED_PAIR_INIT_CODE_HASH,
    pairHashMatchesExpected: pairHash === EXPECTED_PAIR_INIT_CODE_HASH,
    // UniswapV2Library is inlined into the router, so the hash appears in its code.
    routerEmbedsPairHash: contracts.UniswapV2Router02.creation.includes(hex(pairHash)),
  };
  const doc = {
    _comment: "Generated by build.mjs from src/ and the npm packages pinned in package-lock.json. Do not edit; run `bash scripts/contracts.sh`.",
    packages: versions,
    uniswapV2InitCodeHash: uniswap,
    contracts,
  };
  return JSON.stringify(sortKeys(doc), null, 2) + "\n";
}

// Names the top-level / per-contract fields that differ, for a readable --check failure.
function describeDiff(oldText, newText) {
  let oldDoc;
  try {
    oldDoc = JSON.parse(oldText);
  } catch {
    return ["committed artifacts.json is not valid JSON"];
  }
  const newDoc = JSON.parse(newText);
  const diffs = [];
  for (const key of new Set([...Object.keys(oldDoc), ...Object.keys(newDoc)])) {
    if (key === "contracts") continue;
    if (JSON.stringify(oldDoc[key]) !== JSON.stringify(newDoc[key])) diffs.push(key);
  }
  const oc = oldDoc.contracts || {};
  const nc = newDoc.contracts || {};
  for (const name of new Set([...Object.keys(oc), ...Object.keys(nc)])) {
    if (!oc[name] || !nc[name]) {
      diffs.push(`contracts.${name} (${oc[name] ? "removed" : "added"})`);
      continue;
    }
    for (const f of new Set([...Object.keys(oc[name]), ...Object.keys(nc[name])])) {
      if (JSON.stringify(oc[name][f]) !== JSON.stringify(nc[name][f])) diffs.push(`contracts.${name}.${f}`);
    }
  }
  return diffs.length ? diffs : ["formatting only"];
}

const args = process.argv.slice(2);
const unknown = args.filter((a) => a !== "--check");
if (unknown.length) fail(`unknown argument(s): ${unknown.join(" ")} (usage: node build.mjs [--check])`);

const text = build();
const rel = path.relative(process.cwd(), OUT_FILE) || OUT_FILE;
const current = fs.existsSync(OUT_FILE) ? fs.readFileSync(OUT_FILE, "utf8") : null;

if (args.includes("--check")) {
  if (current === null) fail(`${rel} is missing; run \`bash scripts/contracts.sh\` and commit it`);
  if (current !== text) {
    fail(
      `${rel} is out of date with src/ and the pinned packages. Differs in:\n  ` +
        describeDiff(current, text).join("\n  ") +
        "\nRun `bash scripts/contracts.sh` and commit the result.",
    );
  }
  console.log(`${rel} is up to date.`);
} else {
  if (current !== text) fs.writeFileSync(OUT_FILE, text);
  console.log(`${current === text ? "unchanged" : "wrote"} ${rel} (${text.length} bytes)`);
}

const u = JSON.parse(text).uniswapV2InitCodeHash;
if (!u.pairHashMatchesExpected) {
  console.error(
    `WARNING: keccak256(UniswapV2Pair creation code) = ${u.pairInitCodeHash} != ${u.expectedInitCodeHash}; ` +
      "UniswapV2Router02 cannot locate pairs created by this factory.",
  );
}
