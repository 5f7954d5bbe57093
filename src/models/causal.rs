//! What the causal language-model families (GPT-2, Llama) share: the
//! key/value cache that generation extends one token at a time, the
//! attention bias that hides future and padded positions, and the
//! [`CausalLm`] trait that generation and the `causal-lm` task call.
//!
//! A causal LM's body computes the logits in its top group (after the
//! final norm, through the output projection, which is the input
//! embedding matrix when the checkpoint ties them): tied weights are one
//! parameter, so freezing the embeddings freezes the output projection,
//! as in transformers. Group 0 takes [`super::Flow::Tokens`] (ids, the
//! 0/1 mask of real positions, type ids unused) and the top group returns
//! [`super::Flow::Hidden`] whose `x` holds the logits `[batch, seq, vocab]`.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::Architecture;

/// What a masked attention score gets (transformers uses the dtype's minimum).
pub const MASK_MIN: f32 = f32::MIN;

/// The keys and values of the positions already run, per layer, each
/// `[batch, kv_heads, positions, head_dim]` (after rotary embedding where
/// the family has one); for a decoder with cross-attention, also the
/// encoder's states it reads ([`KvCache::memory`]) and each layer's keys
/// and values of them, computed once at the first step.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// What every step cross-attends to (an encoder-decoder's image states).
    pub memory: Option<EncoderStates>,
    /// Per layer, the cross-attention keys and values of `memory`.
    pub cross: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

/// What cross-attention reads: the encoder's states `[batch, source,
/// width]` and the additive bias `[batch, 1, 1, source]` of their padding.
#[derive(Clone, Debug)]
pub struct EncoderStates {
    pub states: Tensor<3>,
    pub bias: Tensor<4>,
}

impl EncoderStates {
    /// States with every position real.
    pub fn new(states: Tensor<3>) -> Self {
        let [b, n, _] = states.dims();
        let bias = Tensor::zeros([b, 1, 1, n], &states.device());
        Self { states, bias }
    }

    /// The states of batch rows `rows` (repeated or reordered as given).
    pub fn select(&self, rows: Tensor<1, Int>) -> Self {
        Self {
            states: self.states.clone().select(0, rows.clone()),
            bias: self.bias.clone().select(0, rows),
        }
    }
}

impl KvCache {
    /// An empty cache for a model of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            memory: None,
            cross: vec![None; num_layers],
        }
    }

    /// An empty cache whose steps cross-attend to `memory` (when given).
    pub fn with_memory(num_layers: usize, memory: Option<EncoderStates>) -> Self {
        Self {
            memory,
            ..Self::new(num_layers)
        }
    }

    /// Positions cached so far.
    pub fn len(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .next()
            .map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends layer `layer`'s keys and values for the new positions and
    /// returns those of every position so far.
    pub fn append(&mut self, layer: usize, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let all = match self.layers[layer].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        self.layers[layer] = Some(all.clone());
        all
    }

    /// Keeps batch rows `rows` only (sequences that have not finished, or
    /// beams reordered), the memory and its keys and values with them.
    pub fn select(&mut self, rows: &[usize], device: &Device) {
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect(), [rows.len()]),
            device,
        );
        for (k, v) in self.layers.iter_mut().chain(&mut self.cross).flatten() {
            *k = k.clone().select(0, idx.clone());
            *v = v.clone().select(0, idx.clone());
        }
        if let Some(m) = &mut self.memory {
            *m = m.select(idx);
        }
    }
}

/// The additive attention bias `[batch, 1, new, total]` for `new` queries
/// that are the last `new` of `total` positions: a query sees the keys at
/// or before its own position whose `key_mask` (`[batch, total]`, 1 real,
/// 0 padding) is 1; every other score gets [`MASK_MIN`]. A query row with
/// no visible key (a padding query) attends uniformly, never to NaN.
pub fn causal_bias(key_mask: Tensor<2>, new: usize) -> Tensor<4> {
    let [batch, total] = key_mask.dims();
    assert!(new <= total, "{new} queries but {total} positions");
    let offset = total - new;
    let tri: Vec<f32> = (0..new)
        .flat_map(|i| (0..total).map(move |j| f32::from(j <= offset + i)))
        .collect();
    let tri = Tensor::<2>::from_data(TensorData::new(tri, [new, total]), &key_mask.device())
        .reshape([1, 1, new, total]);
    let allowed = tri * key_mask.reshape([batch, 1, 1, total]);
    (allowed.neg() + 1.0) * MASK_MIN
}

/// Positions `offset..offset + new` for every row of a batch (right-padded
/// or unpadded input).
pub fn positions(batch: usize, offset: usize, new: usize, device: &Device) -> Tensor<2, Int> {
    let p: Vec<i64> = (0..batch)
        .flat_map(|_| (offset..offset + new).map(|p| p as i64))
        .collect();
    Tensor::from_data(TensorData::new(p, [batch, new]), device)
}

/// The causal-LM families, by `model_type`.
pub const CAUSAL_FAMILIES: &[&str] = &["gpt2", "llama"];

/// Runs `body` with `$A` bound to the causal-LM family named `$family`
/// (a `model_type`), or `other` when it names none.
#[macro_export]
macro_rules! with_causal_family {
    ($family:expr, $A:ident => $body:expr, else $other:expr) => {
        match $family {
            "gpt2" => {
                type $A = $crate::models::gpt2::Gpt2;
                $body
            }
            "llama" => {
                type $A = $crate::models::llama::Llama;
                $body
            }
            _ => $other,
        }
    };
}

/// A causal language-model family: what generation needs beyond
/// [`Architecture`] (whose `run` covers training on whole sequences).
pub trait CausalLm: Architecture {
    /// Rows of the output projection.
    fn vocab_size(&self) -> usize;

    /// Transformer layers (entries of a [`KvCache`]).
    fn num_layers(&self) -> usize;

    /// The token ids that end a generated sequence (`config.json`'s
    /// `eos_token_id`, one or several).
    fn eos_token_ids(&self) -> Vec<u32>;

    /// The token-embedding lookup `[batch, n, hidden]` of `ids` `[batch, n]`:
    /// what [`CausalLm::forward_embeds`] takes in place of ids (no position
    /// embedding, no dropout; those are applied there).
    fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3>;

    /// Logits `[batch, new, vocab]` for input embeddings `x` `[batch, new,
    /// hidden]` (transformers' `inputs_embeds`: a prefix computed from an
    /// image, token embeddings, or both concatenated) at `positions`
    /// `[batch, new]`, attending causally to the cached positions and to
    /// themselves where `key_mask` (`[batch, cached + new]`, 1 real, 0
    /// padding) is 1. With a cache their keys and values are appended to it;
    /// without one `key_mask` covers `new` positions only.
    fn forward_embeds(
        &self,
        x: Tensor<3>,
        positions: Tensor<2, Int>,
        key_mask: Tensor<2>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3>;

    /// Whether the blocks cross-attend to encoder states (GPT-2 with
    /// `add_cross_attention`, an encoder-decoder's decoder).
    fn has_cross_attention(&self) -> bool {
        false
    }

    /// The model `config.json` at `path` describes, with cross-attention
    /// added to every block (its weights new unless a checkpoint holds
    /// them): what transformers' `VisionEncoderDecoderModel` makes of a
    /// causal LM. Families without it are an error.
    fn with_cross_attention(_path: &Path, _device: &Device) -> anyhow::Result<Self> {
        anyhow::bail!(
            "a `{}` language model has no cross-attention layers (transformers adds them to \
             GPT-2 only): use a GPT-2 decoder with --mapper cross-attention, or a prefix \
             mapper (--mapper mlp or transformer)",
            Self::MODEL_TYPE
        )
    }

    /// [`CausalLm::forward_embeds`] over whole sequences (no cache) with
    /// every block cross-attending to `memory`; only families with
    /// [`CausalLm::has_cross_attention`] implement it.
    fn forward_memory(
        &self,
        _x: Tensor<3>,
        _positions: Tensor<2, Int>,
        _key_mask: Tensor<2>,
        _memory: &EncoderStates,
    ) -> Tensor<3> {
        panic!("a `{}` model has no cross-attention", Self::MODEL_TYPE)
    }

    /// Logits `[batch, new, vocab]` for `ids` `[batch, new]` at `positions`
    /// `[batch, new]` (position ids, as transformers' `position_ids`),
    /// attending to the cached positions and to themselves causally where
    /// `key_mask` (`[batch, cached + new]`, 1 real, 0 padding) is 1; their
    /// keys and values are appended to `cache`. With an empty cache this
    /// equals [`Architecture::run`] over every group.
    fn forward_cached(
        &self,
        ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        key_mask: Tensor<2>,
        cache: &mut KvCache,
    ) -> Tensor<3> {
        self.forward_embeds(self.embed_tokens(ids), positions, key_mask, Some(cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap()
    }

    #[test]
    fn a_query_sees_itself_and_earlier_real_keys() {
        let device = Device::default();
        // row 0: all real; row 1: first position is left padding
        let mask = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 1.0, 0.0, 1.0, 1.0], [2, 3]),
            &device,
        );
        let b = host(causal_bias(mask.clone(), 3));
        let visible: Vec<bool> = b.iter().map(|&x| x == 0.0).collect();
        #[rustfmt::skip]
        let want = [
            true, false, false,  true, true, false,  true, true, true,
            false, false, false, false, true, false, false, true, true,
        ];
        assert_eq!(visible, want);
        assert!(b.iter().all(|&x| x == 0.0 || x == MASK_MIN));
        // the last query alone (one step of generation) sees every real key
        let last = host(causal_bias(mask, 1));
        assert_eq!(last, vec![0.0, 0.0, 0.0, MASK_MIN, 0.0, 0.0]);
    }

    #[test]
    fn the_cache_grows_along_positions_and_keeps_selected_rows() {
        let device = Device::default();
        let mut cache = KvCache::new(2);
        assert!(cache.is_empty());
        let t = |n: usize, v: f32| Tensor::<4>::full([2, 1, n, 2], v, &device);
        cache.append(0, t(3, 1.0), t(3, 1.0));
        cache.append(1, t(3, 1.0), t(3, 1.0));
        assert_eq!(cache.len(), 3);
        let (k, _) = cache.append(0, t(1, 2.0), t(1, 2.0));
        assert_eq!(k.dims(), [2, 1, 4, 2]);
        assert_eq!(host(k)[6..8], [2.0, 2.0]);
        cache.select(&[1], &device);
        assert_eq!(cache.layers[0].as_ref().unwrap().0.dims(), [1, 1, 4, 2]);
        let p: Vec<i64> = positions(2, 4, 2, &device)
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .unwrap();
        assert_eq!(p, vec![4, 5, 4, 5]);
    }
}
