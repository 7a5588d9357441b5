//! Keccak-256 of four messages at once: four independent sponges, one per 64-bit lane, so
//! that with AVX2 each step of the permutation runs on all four in one instruction. Used for
//! the many leaves of a receipts trie, whose hashes do not depend on each other. Gives
//! exactly `keccak256` of each message (tested against it); without AVX2 it is `keccak256`.

use alloy_primitives::{keccak256, B256};

/// Bytes absorbed per permutation (1600 bits less twice the 256-bit output).
const RATE: usize = 136;

/// The round constants of Keccak-f[1600].
const RC: [u64; 24] = [
    0x0000_0000_0000_0001,
    0x0000_0000_0000_8082,
    0x8000_0000_0000_808a,
    0x8000_0000_8000_8000,
    0x0000_0000_0000_808b,
    0x0000_0000_8000_0001,
    0x8000_0000_8000_8081,
    0x8000_0000_0000_8009,
    0x0000_0000_0000_008a,
    0x0000_0000_0000_0088,
    0x0000_0000_8000_8009,
    0x0000_0000_8000_000a,
    0x0000_0000_8000_808b,
    0x8000_0000_0000_008b,
    0x8000_0000_0000_8089,
    0x8000_0000_0000_8003,
    0x8000_0000_0000_8002,
    0x8000_0000_0000_0080,
    0x0000_0000_0000_800a,
    0x8000_0000_8000_000a,
    0x8000_0000_8000_8081,
    0x8000_0000_0000_8080,
    0x0000_0000_8000_0001,
    0x8000_0000_8000_8008,
];

/// The last block of a message, padded as Keccak pads: 0x01 after the message, 0x80 at the
/// end of the block. `rest` is the message from the block's start.
fn last_block(rest: &[u8]) -> [u8; RATE] {
    let mut block = [0u8; RATE];
    block[..rest.len()].copy_from_slice(rest);
    block[rest.len()] ^= 0x01;
    block[RATE - 1] ^= 0x80;
    block
}

/// Word `w` (little-endian) of a block.
fn word(block: &[u8], w: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&block[8 * w..8 * w + 8]);
    i64::from_le_bytes(bytes)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use alloy_primitives::B256;

    use super::{last_block, word, RATE, RC};

    /// Rotates each 64-bit lane left by `n` (`m` = 64 - `n`).
    macro_rules! rotl {
        ($x:expr, $n:literal, $m:literal) => {
            _mm256_or_si256(_mm256_slli_epi64::<$n>($x), _mm256_srli_epi64::<$m>($x))
        };
    }

    /// Keccak-f[1600] on four states, lane `l` of every register being state `l`.
    #[target_feature(enable = "avx2")]
    fn permute(a: &mut [__m256i; 25]) {
        for rc in RC {
            // Theta.
            let mut c = [_mm256_setzero_si256(); 5];
            for x in 0..5 {
                c[x] = _mm256_xor_si256(
                    _mm256_xor_si256(_mm256_xor_si256(a[x], a[x + 5]), a[x + 10]),
                    _mm256_xor_si256(a[x + 15], a[x + 20]),
                );
            }
            for x in 0..5 {
                let d = _mm256_xor_si256(c[(x + 4) % 5], rotl!(c[(x + 1) % 5], 1, 63));
                for y in 0..5 {
                    a[x + 5 * y] = _mm256_xor_si256(a[x + 5 * y], d);
                }
            }
            // Rho and pi: lane x + 5y, rotated, moves to y + 5((2x + 3y) mod 5).
            let mut b = [_mm256_setzero_si256(); 25];
            b[0] = a[0];
            b[16] = rotl!(a[5], 36, 28);
            b[7] = rotl!(a[10], 3, 61);
            b[23] = rotl!(a[15], 41, 23);
            b[14] = rotl!(a[20], 18, 46);
            b[10] = rotl!(a[1], 1, 63);
            b[1] = rotl!(a[6], 44, 20);
            b[17] = rotl!(a[11], 10, 54);
            b[8] = rotl!(a[16], 45, 19);
            b[24] = rotl!(a[21], 2, 62);
            b[20] = rotl!(a[2], 62, 2);
            b[11] = rotl!(a[7], 6, 58);
            b[2] = rotl!(a[12], 43, 21);
            b[18] = rotl!(a[17], 15, 49);
            b[9] = rotl!(a[22], 61, 3);
            b[5] = rotl!(a[3], 28, 36);
            b[21] = rotl!(a[8], 55, 9);
            b[12] = rotl!(a[13], 25, 39);
            b[3] = rotl!(a[18], 21, 43);
            b[19] = rotl!(a[23], 56, 8);
            b[15] = rotl!(a[4], 27, 37);
            b[6] = rotl!(a[9], 20, 44);
            b[22] = rotl!(a[14], 39, 25);
            b[13] = rotl!(a[19], 8, 56);
            b[4] = rotl!(a[24], 14, 50);
            // Chi.
            for y in 0..5 {
                for x in 0..5 {
                    a[x + 5 * y] = _mm256_xor_si256(
                        b[x + 5 * y],
                        _mm256_andnot_si256(b[(x + 1) % 5 + 5 * y], b[(x + 2) % 5 + 5 * y]),
                    );
                }
            }
            // Iota.
            a[0] = _mm256_xor_si256(a[0], _mm256_set1_epi64x(rc as i64));
        }
    }

    /// Word `w` of each state, lane 0 first.
    #[target_feature(enable = "avx2")]
    fn lanes(v: __m256i) -> [i64; 4] {
        [
            _mm256_extract_epi64::<0>(v),
            _mm256_extract_epi64::<1>(v),
            _mm256_extract_epi64::<2>(v),
            _mm256_extract_epi64::<3>(v),
        ]
    }

    /// The four sponges, each absorbing its own message (the shorter ones finish early and
    /// are permuted along without being read again).
    #[target_feature(enable = "avx2")]
    pub(super) fn sponge(messages: [&[u8]; 4]) -> [B256; 4] {
        let blocks = messages.map(|m| m.len() / RATE + 1);
        let most = blocks.iter().copied().max().unwrap_or(1);
        let mut state = [_mm256_setzero_si256(); 25];
        let mut out = [B256::ZERO; 4];
        let mut block = [[0u8; RATE]; 4];
        for k in 0..most {
            for (l, m) in messages.iter().enumerate() {
                block[l] = if k + 1 < blocks[l] {
                    let mut full = [0u8; RATE];
                    full.copy_from_slice(&m[k * RATE..(k + 1) * RATE]);
                    full
                } else if k + 1 == blocks[l] {
                    last_block(&m[k * RATE..])
                } else {
                    [0u8; RATE]
                };
            }
            for (w, s) in state.iter_mut().take(RATE / 8).enumerate() {
                let v = _mm256_set_epi64x(
                    word(&block[3], w),
                    word(&block[2], w),
                    word(&block[1], w),
                    word(&block[0], w),
                );
                *s = _mm256_xor_si256(*s, v);
            }
            permute(&mut state);
            for (l, out) in out.iter_mut().enumerate() {
                if k + 1 == blocks[l] {
                    for w in 0..4 {
                        let lane = lanes(state[w])[l];
                        out[8 * w..8 * w + 8].copy_from_slice(&lane.to_le_bytes());
                    }
                }
            }
        }
        out
    }
}

/// `keccak256` of each of four messages.
#[allow(unsafe_code)]
pub(crate) fn keccak256_x4(messages: [&[u8]; 4]) -> [B256; 4] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the one feature the function is built for.
        return unsafe { avx2::sponge(messages) };
    }
    messages.map(keccak256)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length around the block boundaries, in every lane, mixed with other lengths.
    #[test]
    fn equals_keccak256_at_every_length() {
        let data: Vec<u8> =
            (0..1000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for len in 0..=700usize {
            let others = [len, (len * 7) % 600, (len * 13 + 5) % 450, 1000 - len];
            for lane in 0..4 {
                let mut lens = others;
                lens[lane] = len;
                let messages = lens.map(|n| &data[..n]);
                let got = keccak256_x4(messages);
                for l in 0..4 {
                    assert_eq!(got[l], keccak256(messages[l]), "lengths {lens:?}, lane {l}");
                }
            }
        }
    }
}
