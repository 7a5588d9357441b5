//! Compute-heavy example: prices a European call option on a Cox-Ross-Rubinstein binomial
//! tree in fixed point (6 decimals). `OptionPricer.sol` in `mainnet/execution/contracts`
//! holds the same algorithm in Solidity; both return the same number for the same inputs,
//! which `farol bench wasm` checks before comparing their speed.
//!
//! `price(spot, strike, up, down, p, discount, steps)`: `spot` and `strike` in units of
//! 1e-6 (at most 1e12), `up` and `down` (at most 2.0), `p` (the risk-neutral up probability)
//! and `discount` (one step's discount factor) scaled by 1e6, `steps` ≤ 512. Inputs past the
//! bounds both versions check revert with `Error("input out of range")`.
//!
//! The bounds keep every product under 2^64, so this version computes in `u64`, the machine
//! word of WASM; the Solidity twin computes the same numbers in 256-bit words.

#![no_std]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use farol_wasm_sdk::{entry, error_string, sol, SolCall, U256};

sol! {
    interface IOptionPricer {
        function price(uint256 spot, uint256 strike, uint256 up, uint256 down, uint256 p, uint256 discount, uint256 steps) external pure returns (uint256);
    }
}

const ONE: u64 = 1_000_000;
/// Spot and strike at most 1e12 (1,000,000.0): every product below stays under 2^64.
const MAX_PRICE: u64 = 1_000_000_000_000;
/// Factors at most 2.0.
const MAX_FACTOR: u64 = 2 * ONE;
const MAX_STEPS: u64 = 512;

fn small(v: U256, max: u64) -> Option<u64> {
    u64::try_from(v).ok().filter(|x| *x <= max)
}

fn price(spot: u64, strike: u64, up: u64, down: u64, p: u64, discount: u64, steps: usize) -> u64 {
    // Terminal payoffs: spot * up^j * down^(steps-j), capped so products stay in range.
    let mut v: Vec<u64> = vec![0; steps + 1];
    for (j, slot) in v.iter_mut().enumerate() {
        let mut s = spot;
        for _ in 0..j {
            s = (s * up / ONE).min(MAX_PRICE);
        }
        for _ in 0..steps - j {
            s = (s * down / ONE).min(MAX_PRICE);
        }
        *slot = s.saturating_sub(strike);
    }
    // Backward induction.
    for n in (1..=steps).rev() {
        for j in 0..n {
            v[j] = (p * v[j + 1] + (ONE - p) * v[j]) / ONE * discount / ONE;
        }
    }
    v[0]
}

fn main(input: &[u8]) -> Result<Vec<u8>, Vec<u8>> {
    let Ok(c) = IOptionPricer::priceCall::abi_decode_validate(input) else {
        return Err(Vec::new());
    };
    let args = (
        small(c.spot, MAX_PRICE),
        small(c.strike, MAX_PRICE),
        small(c.up, MAX_FACTOR),
        small(c.down, MAX_FACTOR),
        small(c.p, ONE),
        small(c.discount, ONE),
        small(c.steps, MAX_STEPS),
    );
    let (Some(spot), Some(strike), Some(up), Some(down), Some(p), Some(discount), Some(steps)) =
        args
    else {
        return Err(error_string("input out of range"));
    };
    let v = price(spot, strike, up, down, p, discount, steps as usize);
    Ok(IOptionPricer::priceCall::abi_encode_returns(&U256::from(v)))
}

entry!(main);
