//! Dropout with masks from a counter-based generator ([`super::philox`]),
//! drawn on every core and already scaled by `1/(1-p)`.
//!
//! burn's `Dropout` draws a Bernoulli tensor from the device's ChaCha20
//! generator one element at a time on one thread, then multiplies twice
//! (by the mask, then by the scale): 11% of a BERT `full` step's CPU time.
//! Here the mask is never stored: the forward multiplies by it as it is
//! drawn, and the backward draws it again (an op of the CPU backend with its
//! own backward, [`super::CpuKernels::dropout`]).
//!
//! The masks are deterministic: [`seed`] starts a thread's masks over (the
//! fit loop calls it with each micro-batch's seed, as it seeds the device),
//! and the `k`-th dropout after it draws Philox stream `k` under that seed.
//! Which words an element takes depends on its index only, not on which
//! thread draws it.

use std::cell::Cell;

use burn::backend::DType;
use burn::backend::flex::FlexTensor;
use burn::nn::Dropout;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::philox;

thread_local! {
    /// (seed, masks drawn since it was set)
    static STATE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Starts this thread's dropout masks over from `seed`.
pub fn seed(seed: u64) {
    STATE.with(|s| s.set((seed, 0)));
}

fn next_stream() -> (u64, u64) {
    STATE.with(|s| {
        let (seed, n) = s.get();
        s.set((seed, n + 1));
        (seed, n)
    })
}

/// Mask elements per rayon task (a multiple of [`GROUP`]).
const CHUNK: usize = 1 << 14;

/// Elements drawn from one call of [`philox::blocks`].
const GROUP: usize = 4 * philox::LANES;

/// Multiplies `values` by the mask of stream `stream` under `seed`: each
/// element by `1/keep` with probability `keep`, else by 0.
///
/// Element `64 g + 16 w + l` takes word `w` of block `16 g + l`, so that
/// the 16 lanes of each word are stored side by side.
pub fn apply_mask(values: &mut [f32], keep: f64, seed: u64, stream: u64) {
    assert!(keep > 0.0 && keep <= 1.0, "dropout keep probability {keep}");
    if keep == 1.0 {
        return;
    }
    // keep where the 32-bit word is below keep * 2^32
    let threshold = (keep * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
    let scale = (1.0 / keep) as f32;
    let draw = Draw {
        seed,
        stream,
        threshold,
        scale,
    };
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| draw.chunk(chunk, (c * CHUNK / 4) as u64));
}

#[derive(Clone, Copy)]
struct Draw {
    seed: u64,
    stream: u64,
    threshold: u32,
    scale: f32,
}

impl Draw {
    /// `chunk` times its mask; its first element is that of block `first`.
    fn chunk(self, chunk: &mut [f32], first: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { self.chunk_avx512(chunk, first) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                return unsafe { self.chunk_avx2(chunk, first) };
            }
        }
        self.chunk_plain(chunk, first)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")]
    fn chunk_avx512(self, chunk: &mut [f32], first: u64) {
        self.chunk_plain(chunk, first)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn chunk_avx2(self, chunk: &mut [f32], first: u64) {
        self.chunk_plain(chunk, first)
    }

    #[inline(always)]
    fn chunk_plain(self, chunk: &mut [f32], first: u64) {
        let factor = |w: u32| if w < self.threshold { self.scale } else { 0.0 };
        for (g, group) in chunk.chunks_mut(GROUP).enumerate() {
            let block = first + (g * philox::LANES) as u64;
            let words = philox::blocks(self.seed, self.stream, block);
            if group.len() == GROUP {
                for (w, lanes) in group.chunks_exact_mut(philox::LANES).enumerate() {
                    for (v, &word) in lanes.iter_mut().zip(&words[w]) {
                        *v *= factor(word);
                    }
                }
            } else {
                for (j, v) in group.iter_mut().enumerate() {
                    *v *= factor(words[j / philox::LANES][j % philox::LANES]);
                }
            }
        }
    }
}

/// The mask itself: [`apply_mask`] on ones.
pub fn mask(n: usize, keep: f64, seed: u64, stream: u64) -> Vec<f32> {
    let mut out = vec![1f32; n];
    apply_mask(&mut out, keep, seed, stream);
    out
}

/// [`apply_mask`] on a Flex f32 tensor: in place when it is held once.
pub fn flex_apply(x: FlexTensor, keep: f64, seed: u64, stream: u64) -> FlexTensor {
    super::activation::map_flex(x, |values| apply_mask(values, keep, seed, stream))
}

/// burn's `Dropout::forward`, with this module's masks on the CPU.
pub trait DropoutExt {
    /// Zeroes each element with the layer's probability and scales the
    /// rest, while training (an autodiff device and the layer not frozen);
    /// the identity otherwise.
    fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl DropoutExt for Dropout {
    fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let device = x.device();
        if !self.training.is_enabled() || !device.is_autodiff() || self.prob == 0.0 {
            return x;
        }
        if !super::is_flex(&device) || x.dtype() != DType::F32 {
            #[allow(clippy::disallowed_methods)]
            return self.forward(x);
        }
        let (seed, stream) = next_stream();
        super::dropout_tensor(x, 1.0 - self.prob, seed, stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_rate_scale_and_determinism() {
        let n = 100_003; // not a multiple of 4 or of a chunk
        let m = mask(n, 0.9, 42, 0);
        let kept = m.iter().filter(|&&v| v != 0.0).count();
        assert!(m.iter().all(|&v| v == 0.0 || v == (1.0 / 0.9f64) as f32));
        // binomial(100003, 0.9): sd ~ 95
        assert!((kept as f64 - 0.9 * n as f64).abs() < 500.0, "{kept}");
        assert_eq!(m, mask(n, 0.9, 42, 0));
        assert_ne!(m, mask(n, 0.9, 42, 1));
        assert_ne!(m, mask(n, 0.9, 43, 0));
        // a prefix is the shorter mask: the split over threads does not matter
        assert_eq!(&m[..1000], &mask(1000, 0.9, 42, 0)[..]);
    }

    #[test]
    fn streams_follow_the_seed() {
        seed(5);
        let a = (next_stream(), next_stream());
        seed(5);
        assert_eq!(a, (next_stream(), next_stream()));
        assert_eq!(a, ((5, 0), (5, 1)));
    }

    #[test]
    fn training_only_and_expectation_kept() {
        let device = burn::tensor::Device::flex();
        let x = Tensor::<2>::ones([64, 512], &device);
        let layer = burn::nn::DropoutConfig::new(0.25).init();
        // not an autodiff device: the identity
        assert_eq!(layer.apply(x.clone()).into_data(), x.clone().into_data());
        let ad = device.autodiff();
        seed(1);
        let y = layer.apply(Tensor::<2>::ones([64, 512], &ad));
        let v = y.into_data().try_to_vec::<f32>().unwrap();
        let zeros = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
        assert!((zeros - 0.25).abs() < 0.01, "{zeros}");
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
    }
}
