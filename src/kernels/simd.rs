//! Elementwise loops compiled for the widest vector instructions the CPU
//! has, chosen at run time: the release binary targets baseline x86-64
//! (SSE2, 4 lanes), and the same loop built with AVX2 or AVX-512 enabled
//! runs 2-4x fewer instructions.
//!
//! The functions passed in use plain multiplies and adds (no fused
//! multiply-add), so every path computes the same bits.

/// `xs[i] = f(xs[i])`.
pub fn map(xs: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { map_avx512(xs, f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { map_avx2(xs, f) };
        }
    }
    map_plain(xs, f)
}

/// `gs[i] = f(xs[i], gs[i])`.
pub fn zip_map(xs: &[f32], gs: &mut [f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    assert_eq!(xs.len(), gs.len(), "zip_map: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { zip_map_avx512(xs, gs, f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { zip_map_avx2(xs, gs, f) };
        }
    }
    zip_map_plain(xs, gs, f)
}

#[inline(always)]
fn map_plain(xs: &mut [f32], f: impl Fn(f32) -> f32) {
    for x in xs.iter_mut() {
        *x = f(*x);
    }
}

#[inline(always)]
fn zip_map_plain(xs: &[f32], gs: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    for (g, &x) in gs.iter_mut().zip(xs) {
        *g = f(x, *g);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
fn map_avx512(xs: &mut [f32], f: impl Fn(f32) -> f32) {
    map_plain(xs, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn map_avx2(xs: &mut [f32], f: impl Fn(f32) -> f32) {
    map_plain(xs, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
fn zip_map_avx512(xs: &[f32], gs: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    zip_map_plain(xs, gs, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn zip_map_avx2(xs: &[f32], gs: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    zip_map_plain(xs, gs, f)
}

/// Defines a non-generic function whose body is compiled three times
/// (AVX-512, AVX2, baseline) and picked at run time, like [`map`].
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn plain($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty),*) {
                plain($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                plain($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            plain($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Lanes of the partial sums and maxima below: one 512-bit register of
/// f32. A plain running sum is a serial chain the compiler may not
/// reorder, so a row's reduction would run one element at a time; with
/// `LANES` independent partials it runs a vector at a time (the order of
/// the additions is fixed by the row's length, not by the threads).
pub const LANES: usize = 16;

/// The sum of `f(a[i], b[i], c[i])` over equal-length slices, in
/// [`LANES`] partial sums.
#[inline(always)]
pub fn sum_zip3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut acc = [0f32; LANES];
    let whole = n - n % LANES;
    for ((a, b), c) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
        .zip(c[..whole].chunks_exact(LANES))
    {
        for j in 0..LANES {
            acc[j] += f(a[j], b[j], c[j]);
        }
    }
    let mut tail = 0f32;
    for i in whole..n {
        tail += f(a[i], b[i], c[i]);
    }
    acc.iter().sum::<f32>() + tail
}

/// The sum of `f(x)` over `xs`, in [`LANES`] partial sums.
#[inline(always)]
pub fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    sum_zip3(xs, xs, xs, |x, _, _| f(x))
}

/// The largest value of `xs` (NaN ignored; `-inf` when empty), in
/// [`LANES`] partial maxima.
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(chunks.remainder()) {
        m = if v > m { v } else { m };
    }
    m
}

multiversion! {
    /// `acc += row`, element by element.
    pub fn add_into(acc: &mut [f32], row: &[f32]) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// The sum of per-block partial vectors of `n` values, the blocks in
/// order: with blocks of a fixed size, the same bits on any thread count.
pub fn sum_in_order(partials: &[Vec<f32>], n: usize) -> Vec<f32> {
    let mut sums = vec![0f32; n];
    for p in partials {
        add_into(&mut sums, p);
    }
    sums
}

/// Values per block of [`sum_squares`].
const SQUARES_BLOCK: usize = 1 << 16;

/// The sum of the squares of `xs`: each fixed block of [`SQUARES_BLOCK`]
/// values in [`LANES`] partial sums on any core, the blocks' sums added
/// in order in f64, so the same bits on any thread count and from run to
/// run.
pub fn sum_squares(xs: &[f32]) -> f64 {
    use rayon::prelude::*;
    let blocks: Vec<f64> = xs
        .par_chunks(SQUARES_BLOCK)
        .map(|b| sum_map(b, |v| v * v) as f64)
        .collect();
    blocks.iter().sum()
}

/// A buffer of `len` values left uninitialised, for a kernel that writes
/// every one of them before anything reads it: a zeroed buffer costs a
/// pass over memory (and the page clearing) on the calling thread.
pub fn uninit(len: usize) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: f32 has no invalid bit patterns, and the callers write each
    // value before reading it.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(len)
    };
    out
}
