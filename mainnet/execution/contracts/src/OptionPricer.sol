// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// The Solidity twin of contracts/wasm-examples/option-pricer: a European call on a
/// Cox-Ross-Rubinstein binomial tree in 6-decimal fixed point, the same algorithm step for
/// step. The bounds keep every product below 2^64, so the arithmetic is unchecked in both
/// versions (the Rust one computes in 64-bit words, this one in 256-bit words).
contract OptionPricer {
    uint256 private constant ONE = 1e6;
    uint256 private constant MAX_PRICE = 1e12;
    uint256 private constant MAX_FACTOR = 2e6;

    function price(uint256 spot, uint256 strike, uint256 up, uint256 down, uint256 p, uint256 discount, uint256 steps)
        external
        pure
        returns (uint256)
    {
        require(
            spot <= MAX_PRICE && strike <= MAX_PRICE && up <= MAX_FACTOR && down <= MAX_FACTOR && p <= ONE
                && discount <= ONE && steps <= 512,
            "input out of range"
        );
        uint256[] memory v = new uint256[](steps + 1);
        unchecked {
            for (uint256 j = 0; j <= steps; j++) {
                uint256 s = spot;
                for (uint256 i = 0; i < j; i++) {
                    s = s * up / ONE;
                    if (s > MAX_PRICE) s = MAX_PRICE;
                }
                for (uint256 i = 0; i < steps - j; i++) {
                    s = s * down / ONE;
                    if (s > MAX_PRICE) s = MAX_PRICE;
                }
                v[j] = s > strike ? s - strike : 0;
            }
            for (uint256 n = steps; n > 0; n--) {
                for (uint256 j = 0; j < n; j++) {
                    v[j] = (p * v[j + 1] + (ONE - p) * v[j]) / ONE * discount / ONE;
                }
            }
        }
        return v[0];
    }
}
