//! Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as
//! 1, 2, 3", SC 2011): a counter-based generator. Output block `n` of
//! stream `s` under key `k` is a pure function of `(n, s, k)`, so any thread
//! can produce any part of a mask without touching a shared state, and the
//! mask does not depend on how the work was split.
//!
//! Hand-written: the whole generator is ten rounds of two 32x32->64-bit
//! products; the crates that offer it wrap it in `rand`'s sequential
//! `RngCore` interface, which is what this module exists to avoid. Checked
//! against the published known-answer vectors (tests below).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// The four 32-bit outputs for `counter` under `key`.
#[inline(always)]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (hi0, lo0) = mulhilo(M0, c0);
        let (hi1, lo1) = mulhilo(M1, c2);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// Block `block` of stream `stream` under `seed`: the counter holds the
/// block index (low words) and the stream (high words), the key the seed.
#[inline(always)]
pub fn block(seed: u64, stream: u64, block: u64) -> [u32; 4] {
    philox4x32_10(
        [
            block as u32,
            (block >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// Lanes of [`blocks`].
pub const LANES: usize = 16;

/// Blocks `first .. first + LANES` of stream `stream` under `seed`, as
/// `[word][lane]`: [`block`] for 16 counters at once, written lane-wise so
/// that the compiler vectorises the 32x32->64-bit products.
#[inline(always)]
pub fn blocks(seed: u64, stream: u64, first: u64) -> [[u32; LANES]; 4] {
    let mut c0 = [0u32; LANES];
    let mut c1 = [0u32; LANES];
    let mut c2 = [stream as u32; LANES];
    let mut c3 = [(stream >> 32) as u32; LANES];
    for l in 0..LANES {
        let b = first + l as u64;
        c0[l] = b as u32;
        c1[l] = (b >> 32) as u32;
    }
    let (mut k0, mut k1) = (seed as u32, (seed >> 32) as u32);
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..LANES {
            let p0 = M0 as u64 * c0[l] as u64;
            let p1 = M1 as u64 * c2[l] as u64;
            let n0 = ((p1 >> 32) as u32) ^ c1[l] ^ k0;
            let n2 = ((p0 >> 32) as u32) ^ c3[l] ^ k1;
            c1[l] = p1 as u32;
            c3[l] = p0 as u32;
            c0[l] = n0;
            c2[l] = n2;
        }
    }
    [c0, c1, c2, c3]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's `kat_vectors` for philox4x32_10.
    #[test]
    fn known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0]
            ),
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
        );
    }

    #[test]
    fn blocks_and_streams_differ() {
        assert_ne!(block(1, 0, 0), block(1, 0, 1));
        assert_ne!(block(1, 0, 0), block(1, 1, 0));
        assert_ne!(block(1, 0, 0), block(2, 0, 0));
        assert_eq!(block(7, 3, 1 << 40), block(7, 3, 1 << 40));
    }

    #[test]
    fn lanes_are_blocks() {
        let first = (1u64 << 32) - 5; // the block index carries into the high word
        let lanes = blocks(0xdead_beef_0123, 9, first);
        for (l, lane) in (0..LANES).zip(first..) {
            let words = lanes.map(|word| word[l]);
            assert_eq!(words, block(0xdead_beef_0123, 9, lane));
        }
    }
}
