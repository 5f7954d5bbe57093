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
