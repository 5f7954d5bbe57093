//! One AdamW update of a parameter, its gradient and both moments in a
//! single pass on every core, in place.
//!
//! The tensor form (`train::optim`) is about a dozen separate elementwise
//! ops per parameter, each a pass over memory on one thread: for BERT's
//! 22.7 M parameters a `full` step spent that time with the other core
//! idle. The arithmetic here is the tensor form's, op for op, in f32.

use rayon::prelude::*;

use super::simd::multiversion;

/// The constants of one update.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    /// multiplies the gradient first (clipping); 1 for none
    pub grad_scale: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// `1 - beta1` and `1 - beta2`, rounded from f64 as the tensor form does
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    /// `1 - lr * weight_decay`, or 1 where the parameter does not decay
    pub decay: f32,
    /// `sqrt(1 - beta2^t)`
    pub sqrt_bc2: f32,
    /// `lr / (1 - beta1^t)`
    pub step_size: f32,
}

const CHUNK: usize = 1 << 14;

multiversion! {
    fn update_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: Hyper) {
        let (one_minus_b1, one_minus_b2) = (h.one_minus_beta1, h.one_minus_beta2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * h.grad_scale;
            *m = *m * h.beta1 + g * one_minus_b1;
            *v = *v * h.beta2 + g * g * one_minus_b2;
            let denom = v.sqrt() / h.sqrt_bc2 + h.eps;
            *p = *p * h.decay - *m / denom * h.step_size;
        }
    }
}

/// Updates `p`, `m` and `v` from `g`.
pub fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], h: Hyper) {
    let n = p.len();
    assert!(
        g.len() == n && m.len() == n && v.len() == n,
        "adamw: parameter {n}, gradient {}, moments {} and {}",
        g.len(),
        m.len(),
        v.len()
    );
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| update_chunk(p, g, m, v, h));
}
