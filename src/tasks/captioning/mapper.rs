//! `--mapper transformer`: ClipCap's transformer mapping network, reading
//! the image as tokens. Each feature token (one per cell of the encoder's
//! `--feature-grid`, or the pooled vector as one token) is projected to
//! the language model's width and given a learned position; `P` learned
//! query embeddings follow them; pre-norm transformer layers (multi-head
//! self-attention, GELU feed-forward of four times the width) mix them,
//! and the queries' outputs are the prefix. Unlike the MLP, which flattens
//! the cells into one vector, every query can attend to where things are.

use crate::kernels::matmul::LinearExt;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::layer_norm::LayerNorm;
use crate::kernels::{self, Kind};
use crate::models::params::SeededRng;
use crate::models::transformer::{layer_norm, linear};

/// Attention heads for width `d`: heads of 64 where they divide it, else
/// the most heads up to 16 that divide it.
pub fn heads_for(d: usize) -> usize {
    if d.is_multiple_of(64) {
        return d / 64;
    }
    (1..=16).rev().find(|h| d.is_multiple_of(*h)).unwrap_or(1)
}

/// One pre-norm layer: `x + attn(norm1(x))`, then `x + ff(norm2(x))`.
#[derive(Module, Debug)]
pub struct MapperLayer {
    pub norm1: LayerNorm,
    /// Q, K and V in one product, `[d, 3d]`.
    pub qkv: Linear,
    pub out: Linear,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub heads: usize,
}

impl MapperLayer {
    fn new(d: usize, device: &Device) -> Self {
        Self {
            norm1: layer_norm(d, 1e-5, device),
            qkv: linear(d, 3 * d, true, device),
            out: linear(d, d, true, device),
            norm2: layer_norm(d, 1e-5, device),
            fc1: linear(d, 4 * d, true, device),
            fc2: linear(4 * d, d, true, device),
            heads: heads_for(d),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let (h, hd) = (self.heads, d / self.heads);
        let qkv = self.qkv.apply(self.norm1.forward(x.clone()));
        let part = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d)
                .reshape([b, s, h, hd])
                .swap_dims(1, 2)
        };
        let q = part(0) * (1.0 / (hd as f64).sqrt());
        let scores = kernels::matmul(q, part(1).swap_dims(2, 3));
        let context = kernels::matmul_merge_heads(kernels::softmax_last(scores), part(2));
        let x = x + self.out.apply(context);
        let y = kernels::activation(Kind::Gelu, self.fc1.apply(self.norm2.forward(x.clone())));
        x + self.fc2.apply(y)
    }
}

/// The mapping network: feature tokens `[batch, cells, channels]` in, the
/// prefix `[batch, P, d]` out.
#[derive(Module, Debug)]
pub struct TransformerMapper {
    pub project: Linear,
    /// `[cells, d]`: added to the projected feature tokens.
    pub position: Param<Tensor<2>>,
    /// `[P, d]`: the learned queries whose outputs are the prefix.
    pub queries: Param<Tensor<2>>,
    pub layers: Vec<MapperLayer>,
}

impl TransformerMapper {
    /// Zero parameters of the shapes; [`TransformerMapper::init`] draws them.
    pub fn new(
        channels: usize,
        cells: usize,
        prefix: usize,
        d: usize,
        layers: usize,
        device: &Device,
    ) -> Self {
        Self {
            project: linear(channels, d, true, device),
            position: Param::from_tensor(Tensor::zeros([cells, d], device)),
            queries: Param::from_tensor(Tensor::zeros([prefix, d], device)),
            layers: (0..layers).map(|_| MapperLayer::new(d, device)).collect(),
        }
    }

    /// PyTorch's defaults: `nn.Linear`'s uniform init for every product,
    /// LayerNorm weights 1 and biases 0, positions and queries N(0, 0.02²).
    pub fn init(self, rng: &mut SeededRng) -> Self {
        let normal = |p: Param<Tensor<2>>, rng: &mut SeededRng| {
            let t = p.val();
            let [r, c] = t.dims();
            let values: Vec<f32> = (0..r * c).map(|_| (rng.normal() * 0.02) as f32).collect();
            let mut fresh = Tensor::<2>::from_data(TensorData::new(values, [r, c]), &t.device());
            if t.is_require_grad() {
                fresh = fresh.require_grad();
            }
            Param::from_tensor(fresh)
        };
        let project = super::torch_linear(self.project, rng);
        let position = normal(self.position, rng);
        let queries = normal(self.queries, rng);
        let layers = self
            .layers
            .into_iter()
            .map(|l| MapperLayer {
                qkv: super::torch_linear(l.qkv, rng),
                out: super::torch_linear(l.out, rng),
                fc1: super::torch_linear(l.fc1, rng),
                fc2: super::torch_linear(l.fc2, rng),
                ..l
            })
            .collect();
        Self {
            project,
            position,
            queries,
            layers,
        }
    }

    /// `tokens`: `[batch, cells, channels]`.
    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let [b, cells, _] = tokens.dims();
        let [p, d] = self.queries.dims();
        let x = self.project.apply(tokens) + self.position.val().unsqueeze::<3>();
        let q = self.queries.val().unsqueeze::<3>().expand([b, p, d]);
        let mut x = Tensor::cat(vec![x, q], 1);
        for layer in &self.layers {
            x = layer.forward(x);
        }
        x.narrow(1, cells, p)
    }

    /// Forward FLOPs per image (products only, as elsewhere).
    pub fn flops(channels: usize, cells: usize, prefix: usize, d: usize, layers: usize) -> f64 {
        let s = (cells + prefix) as f64;
        let d = d as f64;
        let per_layer = 2.0 * s * d * (3.0 * d + d + 8.0 * d) + 4.0 * s * s * d;
        2.0 * cells as f64 * channels as f64 * d + layers as f64 * per_layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_divide_the_width() {
        assert_eq!(heads_for(576), 9);
        assert_eq!(heads_for(768), 12);
        assert_eq!(heads_for(100), 10);
        assert_eq!(heads_for(17), 1);
    }

    /// The queries' outputs depend on every cell, and on where each cell
    /// is: swapping two cells' features changes the prefix (the MLP on a
    /// pooled vector could not tell).
    #[test]
    fn the_prefix_depends_on_where_the_features_are() {
        let device = Device::flex();
        let mapper = TransformerMapper::new(6, 4, 3, 16, 2, &device).init(&mut SeededRng::new(5));
        let values: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let tokens = Tensor::<3>::from_data(TensorData::new(values.clone(), [1, 4, 6]), &device);
        let mut swapped = values.clone();
        for c in 0..6 {
            swapped.swap(c, 6 + c);
        }
        let swapped = Tensor::<3>::from_data(TensorData::new(swapped, [1, 4, 6]), &device);
        let a = mapper.forward(tokens);
        assert_eq!(a.dims(), [1, 3, 16]);
        let diff: f32 = (a - mapper.forward(swapped)).abs().max().into_scalar();
        assert!(
            diff > 1e-3,
            "swapping two cells moved the prefix by only {diff}"
        );
    }
}
