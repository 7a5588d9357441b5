// The client scripts' check runner: runs one named check, prints `ok` with its time, or the
// failure (viem's and ethers' short messages included) and exits non-zero.

export async function step(name, f, label = "") {
  const t = Date.now();
  try {
    await f();
  } catch (e) {
    console.error(`FAIL ${label}${name}: ${e?.shortMessage ?? ""} ${e?.details ?? ""}\n${e?.stack ?? e}`);
    process.exit(1);
  }
  console.log(`ok  ${label}${name} (${Date.now() - t} ms)`);
}
