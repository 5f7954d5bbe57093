//! Where a model's parameters come from: a pretrained checkpoint, or the
//! architecture's published initialisation (training from scratch).
//!
//! Every architecture builds its layers through one [`ParamBuilder`], asking for
//! each tensor by its checkpoint key in the checkpoint's own layout. The same code
//! path therefore loads pretrained weights and initialises from scratch, and the
//! load report (missing, unexpected, newly initialised keys) falls out of it.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor, TensorData};

use crate::hub::Checkpoint;

/// How a parameter is initialised when it does not come from a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal(0, std), as transformers does for Linear and Embedding weights.
    Normal(f64),
    Zeros,
    Ones,
}

/// A small deterministic generator (SplitMix64), so that an initialisation
/// depends on the seed alone, never on a crate version.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
    spare_normal: Option<f64>,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare_normal: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller, both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// What loading a checkpoint into an architecture found.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Keys taken from the checkpoint.
    pub loaded: usize,
    /// Keys the architecture needs that the checkpoint lacks (initialised fresh).
    pub missing: Vec<String>,
    /// Keys of a new task head, expected to be absent (initialised fresh).
    pub new_head: Vec<String>,
    /// Checkpoint keys the architecture does not use.
    pub unexpected: Vec<String>,
    /// True when no checkpoint was used at all (training from scratch).
    pub from_scratch: bool,
}

impl LoadReport {
    /// Human-readable lines, one per kind of finding; empty when everything matched.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.from_scratch {
            out.push("initialised from scratch (no pretrained weights used)".to_string());
            return out;
        }
        if !self.new_head.is_empty() {
            out.push(format!(
                "new head initialised (expected, it is trained on your data): {}",
                self.new_head.join(", ")
            ));
        }
        if !self.missing.is_empty() {
            out.push(format!(
                "warning: {} key(s) missing from the checkpoint, initialised fresh: {}",
                self.missing.len(),
                abbreviate(&self.missing, 8)
            ));
        }
        if !self.unexpected.is_empty() {
            out.push(format!(
                "{} checkpoint key(s) not used by this architecture: {}",
                self.unexpected.len(),
                abbreviate(&self.unexpected, 8)
            ));
        }
        out
    }
}

fn abbreviate(keys: &[String], n: usize) -> String {
    if keys.len() <= n {
        keys.join(", ")
    } else {
        format!("{}, ... ({} more)", keys[..n].join(", "), keys.len() - n)
    }
}

enum Source<'a> {
    Pretrained {
        checkpoint: &'a Checkpoint,
        used: BTreeSet<String>,
        /// Checkpoint keys that are bookkeeping, not parameters (e.g. position_ids).
        ignorable: Vec<String>,
    },
    Scratch,
}

/// Hands out parameters, from a checkpoint or freshly initialised.
pub struct ParamBuilder<'a> {
    device: Device,
    source: Source<'a>,
    rng: SeededRng,
    /// Key prefixes under which absence is expected (a new task head).
    head_prefixes: Vec<String>,
    report: LoadReport,
}

impl<'a> ParamBuilder<'a> {
    /// Parameters come from `checkpoint`; missing ones are initialised with `seed`.
    pub fn pretrained(checkpoint: &'a Checkpoint, device: &Device, seed: u64) -> Self {
        Self {
            device: device.clone(),
            source: Source::Pretrained {
                checkpoint,
                used: BTreeSet::new(),
                ignorable: Vec::new(),
            },
            rng: SeededRng::new(seed),
            head_prefixes: Vec::new(),
            report: LoadReport::default(),
        }
    }

    /// Every parameter initialised with the architecture's published init.
    pub fn scratch(device: &Device, seed: u64) -> Self {
        Self {
            device: device.clone(),
            source: Source::Scratch,
            rng: SeededRng::new(seed),
            head_prefixes: Vec::new(),
            report: LoadReport {
                from_scratch: true,
                ..LoadReport::default()
            },
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn checkpoint(&self) -> Option<&'a Checkpoint> {
        match &self.source {
            Source::Pretrained { checkpoint, .. } => Some(checkpoint),
            Source::Scratch => None,
        }
    }

    /// Keys under `prefix` belong to a new head: their absence is expected.
    pub fn expect_new_head(&mut self, prefix: &str) {
        self.head_prefixes.push(prefix.to_string());
    }

    /// Checkpoint keys ending in `suffix` are not parameters; never report them.
    pub fn ignore_suffix(&mut self, suffix: &str) {
        if let Source::Pretrained { ignorable, .. } = &mut self.source {
            ignorable.push(suffix.to_string());
        }
    }

    /// One tensor in checkpoint layout: loaded if the checkpoint has `key`
    /// (trying each of `aliases` too), else initialised with `init`.
    ///
    /// A checkpoint tensor whose shape differs from `shape` is an error naming
    /// the key and both shapes.
    pub fn tensor(
        &mut self,
        key: &str,
        aliases: &[&str],
        shape: &[usize],
        init: Init,
    ) -> Result<Vec<f32>> {
        if let Source::Pretrained {
            checkpoint, used, ..
        } = &mut self.source
        {
            let found = std::iter::once(key)
                .chain(aliases.iter().copied())
                .find_map(|k| checkpoint.tensors.get(k).map(|t| (k, t)));
            if let Some((found_key, t)) = found {
                if t.shape != shape {
                    bail!(
                        "checkpoint tensor `{found_key}` has shape {:?}, but the architecture \
                         built from config.json expects {:?}: the config does not describe these \
                         weights (check hidden_size, vocab_size, intermediate_size, \
                         num_attention_heads, max_position_embeddings in config.json)",
                        t.shape,
                        shape
                    );
                }
                used.insert(found_key.to_string());
                self.report.loaded += 1;
                return Ok(t.data.clone());
            }
            if self
                .head_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
            {
                self.report.new_head.push(key.to_string());
            } else {
                self.report.missing.push(key.to_string());
            }
        }
        let n: usize = shape.iter().product();
        Ok(match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n).map(|_| (self.rng.normal() * std) as f32).collect(),
        })
    }

    /// A Linear layer from `{key}.weight` ([out, in], as PyTorch stores it) and
    /// `{key}.bias`. Burn multiplies by [in, out], so the weight is transposed here.
    pub fn linear(&mut self, key: &str, d_in: usize, d_out: usize, std: f64) -> Result<Linear> {
        let w = self.tensor(
            &format!("{key}.weight"),
            &[],
            &[d_out, d_in],
            Init::Normal(std),
        )?;
        let b = self.tensor(&format!("{key}.bias"), &[], &[d_out], Init::Zeros)?;
        Ok(Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]),
                &self.device,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [d_out]),
                &self.device,
            ))),
        })
    }

    /// A LayerNorm from `{key}.weight`/`{key}.bias` (or the older `gamma`/`beta`).
    pub fn layer_norm(&mut self, key: &str, d: usize, eps: f64) -> Result<LayerNorm> {
        let g = self.tensor(
            &format!("{key}.weight"),
            &[&format!("{key}.gamma")],
            &[d],
            Init::Ones,
        )?;
        let b = self.tensor(
            &format!("{key}.bias"),
            &[&format!("{key}.beta")],
            &[d],
            Init::Zeros,
        )?;
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(&self.device);
        ln.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(g, [d]), &self.device));
        ln.beta = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [d]),
            &self.device,
        )));
        Ok(ln)
    }

    /// An Embedding from `{key}.weight` ([n, d]); `padding_idx`'s row is zero when
    /// initialised fresh, as PyTorch's nn.Embedding does.
    pub fn embedding(
        &mut self,
        key: &str,
        n: usize,
        d: usize,
        std: f64,
        padding_idx: Option<usize>,
    ) -> Result<Embedding> {
        let full_key = format!("{key}.weight");
        let fresh = self
            .checkpoint()
            .is_none_or(|c| !c.tensors.contains_key(&full_key));
        let mut w = self.tensor(&full_key, &[], &[n, d], Init::Normal(std))?;
        if let (true, Some(p)) = (fresh, padding_idx)
            && p < n
        {
            w[p * d..(p + 1) * d].fill(0.0);
        }
        Ok(Embedding {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [n, d]), &self.device)),
        })
    }

    /// Ends the build: lists the checkpoint keys nothing asked for.
    pub fn finish(mut self) -> LoadReport {
        if let Source::Pretrained {
            checkpoint,
            used,
            ignorable,
        } = &self.source
        {
            self.report.unexpected = checkpoint
                .tensors
                .keys()
                .filter(|k| !used.contains(*k) && !ignorable.iter().any(|s| k.ends_with(s)))
                .cloned()
                .collect();
        }
        self.report
    }
}

/// Tensors in checkpoint layout, ready for `hub::write_safetensors`.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// `{key}.weight` ([out, in], PyTorch's layout) and `{key}.bias` of a Linear.
pub fn export_linear(out: &mut NamedTensors, key: &str, linear: &Linear) {
    let (shape, w) = host(&linear.weight.val());
    let (d_in, d_out) = (shape[0], shape[1]);
    out.push((
        format!("{key}.weight"),
        vec![d_out, d_in],
        transpose(&w, d_in, d_out),
    ));
    if let Some(b) = &linear.bias {
        let (shape, v) = host(&b.val());
        out.push((format!("{key}.bias"), shape, v));
    }
}

/// `{key}.weight` and `{key}.bias` of a LayerNorm.
pub fn export_layer_norm(out: &mut NamedTensors, key: &str, ln: &LayerNorm) {
    let (shape, g) = host(&ln.gamma.val());
    out.push((format!("{key}.weight"), shape, g));
    if let Some(b) = &ln.beta {
        let (shape, v) = host(&b.val());
        out.push((format!("{key}.bias"), shape, v));
    }
}

/// `{key}.weight` of an Embedding.
pub fn export_embedding(out: &mut NamedTensors, key: &str, emb: &Embedding) {
    let (shape, w) = host(&emb.weight.val());
    out.push((format!("{key}.weight"), shape, w));
}

/// Row-major [rows, cols] -> [cols, rows].
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Host copy of a float tensor, with its shape.
pub fn host<const D: usize>(t: &Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.to_data().convert::<f32>();
    let shape = data.shape().as_slice().to_vec();
    let values = data
        .as_slice::<f32>()
        .map(|s| s.to_vec())
        .unwrap_or_default();
    (shape, values)
}

/// Parameter counts keyed by group name, in the order given.
pub type GroupCounts = Vec<(String, usize)>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_standard_normal() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
        let ys: Vec<f64> = (0..20_000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        let mut c = SeededRng::new(8);
        assert_ne!(xs[0], c.normal());
    }

    #[test]
    fn transpose_moves_rows_to_columns() {
        // [[1,2,3],[4,5,6]] -> [[1,4],[2,5],[3,6]]
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
