//! Causal language modelling (`--task causal-lm`): documents are tokenised,
//! joined with the model's end-of-sequence token and packed into rows of
//! `--block-size` tokens (or kept one document per row with `--pack off`,
//! the padding masked); the loss is next-token cross-entropy on real tokens
//! only; validation reports perplexity and next-token accuracy.
//!
//! A causal-LM family computes the logits in its top group (see
//! [`crate::models::causal`]), so the task puts no module on top: its head
//! is [`NoHead`].

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{MetricName, Task};
use crate::models::{Architecture, Flow};
use crate::train::cache::KeyHasher;

/// The (empty) head of a causal LM: the family's top group already ends
/// in the output projection.
#[derive(Module, Debug, Default)]
pub struct NoHead;

/// `--pack`: how documents become training rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pack {
    /// Documents joined with EOS and cut into rows of exactly the block
    /// size (the last row may be shorter): no padding, no wasted positions.
    #[default]
    On,
    /// One document per row (followed by EOS), cut at the block size;
    /// shorter rows are padded and the padding masked.
    Off,
}

/// Token rows from tokenised documents: each document is followed by
/// `eos`; rows hold at most `block` tokens; a row of fewer than 2 tokens
/// predicts nothing and is dropped.
pub fn pack_rows(docs: &[Vec<u32>], eos: u32, block: usize, pack: Pack) -> Vec<Vec<u32>> {
    assert!(block >= 2, "block size {block}");
    let mut rows = Vec::new();
    match pack {
        Pack::On => {
            let mut row = Vec::with_capacity(block);
            for t in docs.iter().flat_map(|d| d.iter().copied().chain([eos])) {
                row.push(t);
                if row.len() == block {
                    rows.push(std::mem::replace(&mut row, Vec::with_capacity(block)));
                }
            }
            rows.push(row);
        }
        Pack::Off => {
            for d in docs {
                let mut row: Vec<u32> = d.iter().copied().chain([eos]).collect();
                row.truncate(block);
                rows.push(row);
            }
        }
    }
    rows.retain(|r| r.len() >= 2);
    rows
}

/// The rows of `texts` as a model with `tokenizer` and end-of-sequence
/// token `eos` trains and is tested on: each document tokenised (with the
/// special tokens the tokenizer adds, such as a BOS, but no trailing EOS of
/// its own), then [`pack_rows`].
pub fn lm_rows(
    tokenizer: &tokenizers::Tokenizer,
    texts: &[&str],
    eos: u32,
    block: usize,
    pack: Pack,
) -> Result<Vec<Vec<u32>>> {
    let mut ids = crate::tokenize::encode_documents(tokenizer, texts)?;
    for d in &mut ids {
        // tokenizers whose post-processor already ends with EOS
        if d.last() == Some(&eos) {
            d.pop();
        }
    }
    Ok(pack_rows(&ids, eos, block, pack))
}

/// The task: how rows are padded.
#[derive(Clone, Debug)]
pub struct CausalLanguageModelling {
    /// The id padding positions hold (masked everywhere; any valid id).
    pub pad_id: u32,
}

/// One split: rows of token ids (see [`pack_rows`]).
#[derive(Clone, Debug, Default)]
pub struct LmSplit {
    pub rows: Vec<Vec<u32>>,
}

impl LmSplit {
    /// Tokens the split predicts (every position but each row's first).
    pub fn targets(&self) -> usize {
        self.rows.iter().map(|r| r.len() - 1).sum()
    }
}

/// The next token at each position of a batch, and where one exists.
pub struct LmTargets {
    /// `[batch, seq]`: the token at position t + 1 (0 where there is none).
    pub next: Tensor<2, Int>,
    /// `[batch, seq]`: 1 where position t has a next token, else 0.
    pub weight: Tensor<2>,
    /// Number of ones in `weight`.
    pub count: usize,
}

/// Validation of a language model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LmMetrics {
    /// Mean next-token negative log-likelihood (nats per token).
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Share of positions whose most likely next token is the right one.
    pub accuracy: f64,
    /// Tokens predicted.
    pub tokens: usize,
}

impl CausalLanguageModelling {
    fn batch(&self, split: &LmSplit, idx: &[usize]) -> (Vec<i64>, Vec<f32>, usize) {
        let seq = idx.iter().map(|&i| split.rows[i].len()).max().unwrap_or(0);
        let mut ids = vec![self.pad_id as i64; idx.len() * seq];
        let mut mask = vec![0.0f32; idx.len() * seq];
        for (b, &i) in idx.iter().enumerate() {
            for (t, &id) in split.rows[i].iter().enumerate() {
                ids[b * seq + t] = id as i64;
                mask[b * seq + t] = 1.0;
            }
        }
        (ids, mask, seq)
    }
}

fn logits_of(features: Flow) -> Tensor<3> {
    match features {
        Flow::Hidden { x, .. } => x,
        _ => panic!("a causal LM's top group returns logits as Flow::Hidden"),
    }
}

impl Task for CausalLanguageModelling {
    const NAME: &'static str = "causal-lm";
    const HF_SUFFIX: &'static str = "ForCausalLM";
    type Head = NoHead;
    type Split = LmSplit;
    type Targets = LmTargets;
    type Metrics = LmMetrics;

    fn new_head<A: Architecture>(&self, _body: &A, _device: &Device) -> NoHead {
        NoHead
    }

    fn lengths(split: &LmSplit) -> Vec<usize> {
        split.rows.iter().map(Vec::len).collect()
    }

    fn input(&self, split: &LmSplit, idx: &[usize], device: &Device) -> Flow {
        let (ids, mask, seq) = self.batch(split, idx);
        let b = idx.len();
        Flow::Tokens {
            ids: Tensor::from_data(TensorData::new(ids, [b, seq]), device),
            type_ids: Tensor::zeros([b, seq], device),
            mask: Tensor::from_data(TensorData::new(mask, [b, seq]), device),
        }
    }

    fn targets(&self, split: &LmSplit, idx: &[usize], device: &Device) -> LmTargets {
        let seq = idx.iter().map(|&i| split.rows[i].len()).max().unwrap_or(0);
        let mut next = vec![0i64; idx.len() * seq];
        let mut weight = vec![0.0f32; idx.len() * seq];
        let mut count = 0;
        for (b, &i) in idx.iter().enumerate() {
            let row = &split.rows[i];
            for t in 0..row.len().saturating_sub(1) {
                next[b * seq + t] = row[t + 1] as i64;
                weight[b * seq + t] = 1.0;
                count += 1;
            }
        }
        let shape = [idx.len(), seq];
        LmTargets {
            next: Tensor::from_data(TensorData::new(next, shape), device),
            weight: Tensor::from_data(TensorData::new(weight, shape), device),
            count,
        }
    }

    fn hash_inputs(&self, split: &LmSplit, key: &mut KeyHasher) {
        let rows: Vec<(&[u32], &[u32])> =
            split.rows.iter().map(|r| (r.as_slice(), &[][..])).collect();
        key.examples(&rows);
    }

    fn loss(&self, _head: &NoHead, features: Flow, t: LmTargets) -> Tensor<1> {
        let logits = logits_of(features);
        let picked = crate::kernels::log_prob(logits, t.next);
        (picked * t.weight).sum().neg() / t.count.max(1) as f64
    }

    fn outputs(
        &self,
        _head: &NoHead,
        features: Flow,
        split: &LmSplit,
        idx: &[usize],
    ) -> Vec<Vec<f32>> {
        let logits = logits_of(features);
        let device = logits.device();
        let [b, s, _] = logits.dims();
        let t = self.targets(split, idx, &device);
        let best: Vec<i64> = logits
            .clone()
            .argmax(2)
            .reshape([b * s])
            .into_data()
            .convert::<i64>()
            .try_into_vec()
            .expect("argmax is integer");
        let picked: Vec<f32> = crate::kernels::log_prob(logits, t.next.clone())
            .reshape([b * s])
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("log-probabilities are float");
        let next: Vec<i64> = t
            .next
            .reshape([b * s])
            .into_data()
            .try_into_vec_as::<i64>()
            .expect("ids");
        idx.iter()
            .enumerate()
            .map(|(r, &i)| {
                let n = split.rows[i].len() - 1;
                let (mut nll, mut correct) = (0.0f64, 0usize);
                for p in r * s..r * s + n {
                    nll -= picked[p] as f64;
                    correct += usize::from(best[p] == next[p]);
                }
                vec![nll as f32, n as f32, correct as f32]
            })
            .collect()
    }

    fn metrics(&self, _split: &LmSplit, outputs: &[Vec<f32>]) -> LmMetrics {
        let (mut nll, mut n, mut correct) = (0.0f64, 0usize, 0usize);
        for o in outputs {
            nll += o[0] as f64;
            n += o[1] as usize;
            correct += o[2] as usize;
        }
        let loss = if n > 0 { nll / n as f64 } else { f64::NAN };
        LmMetrics {
            loss,
            perplexity: loss.exp(),
            accuracy: if n > 0 {
                correct as f64 / n as f64
            } else {
                0.0
            },
            tokens: n,
        }
    }

    fn score(m: &LmMetrics, name: MetricName) -> f64 {
        match name {
            MetricName::Loss | MetricName::Perplexity => -m.loss,
            // macro-F1, BLEU and CIDEr have no meaning here; `TrainConfig::check` refuses them
            MetricName::Accuracy | MetricName::MacroF1 | MetricName::Bleu4 | MetricName::Cider => {
                m.accuracy
            }
        }
    }

    fn loss_of(m: &LmMetrics) -> f64 {
        m.loss
    }

    fn describe(m: &LmMetrics) -> String {
        format!(
            "perplexity {:.3}, next-token accuracy {:.4}, loss {:.4} ({} tokens)",
            m.perplexity, m.accuracy, m.loss, m.tokens
        )
    }

    fn head_flops<A: Architecture>(&self, _body: &A, _batch: usize) -> f64 {
        0.0 // the output projection is counted in the body's top group
    }

    fn export_config(
        &self,
        _config: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        Ok(())
    }
}

/// A clear error for a block size the model cannot take.
pub fn check_block_size(block: usize, max_positions: usize) -> Result<()> {
    if block < 2 {
        bail!(
            "--block-size must be at least 2 tokens (a token and the one it predicts), got {block}"
        );
    }
    if block > max_positions {
        bail!(
            "--block-size {block} exceeds the model's context of {max_positions} positions: use at most {max_positions}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::classification::nll;

    #[test]
    fn packing_joins_documents_with_eos_and_cuts_rows() {
        let docs = vec![vec![1, 2, 3], vec![4], vec![5, 6]];
        assert_eq!(
            pack_rows(&docs, 0, 4, Pack::On),
            vec![vec![1, 2, 3, 0], vec![4, 0, 5, 6], vec![0]]
                .into_iter()
                .filter(|r: &Vec<u32>| r.len() >= 2)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            pack_rows(&docs, 0, 3, Pack::Off),
            vec![vec![1, 2, 3], vec![4, 0], vec![5, 6, 0]]
        );
        // a single-token document predicts its EOS; an empty one is dropped
        assert_eq!(
            pack_rows(&[vec![], vec![7]], 9, 8, Pack::Off),
            vec![vec![7, 9]]
        );
    }

    fn logits(values: &[f32], b: usize, s: usize, v: usize) -> Flow {
        let device = Device::default();
        Flow::Hidden {
            x: Tensor::from_data(TensorData::new(values.to_vec(), [b, s, v]), &device),
            mask: Tensor::ones([b, s], &device),
        }
    }

    #[test]
    fn loss_and_metrics_count_real_next_tokens_only() {
        let task = CausalLanguageModelling { pad_id: 0 };
        // vocabulary 3; row 0 has 3 tokens (2 targets), row 1 has 2 (1 target, 1 padding)
        let split = LmSplit {
            rows: vec![vec![0, 1, 2], vec![2, 1]],
        };
        let v: Vec<f32> = (0..18).map(|i| ((i * 7) % 5) as f32 * 0.3 - 0.4).collect();
        let device = Device::default();
        let targets = task.targets(&split, &[0, 1], &device);
        assert_eq!(targets.count, 3);
        let loss: f32 = task
            .loss(&NoHead, logits(&v, 2, 3, 3), targets)
            .into_scalar();
        // by hand: (b, t) -> target: (0,0)->1, (0,1)->2, (1,0)->1
        let row = |b: usize, t: usize| &v[(b * 3 + t) * 3..(b * 3 + t) * 3 + 3];
        let want = (nll(row(0, 0), 1) + nll(row(0, 1), 2) + nll(row(1, 0), 1)) / 3.0;
        assert!((loss as f64 - want).abs() < 1e-6, "{loss} vs {want}");

        let outs = task.outputs(&NoHead, logits(&v, 2, 3, 3), &split, &[0, 1]);
        let m = task.metrics(&split, &outs);
        assert_eq!(m.tokens, 3);
        assert!((m.loss - want).abs() < 1e-6);
        assert!((m.perplexity - want.exp()).abs() < 1e-5);
        let argmax = crate::tasks::classification::argmax;
        let hits = usize::from(argmax(row(0, 0)) == 1)
            + usize::from(argmax(row(0, 1)) == 2)
            + usize::from(argmax(row(1, 0)) == 1);
        assert_eq!(m.accuracy, hits as f64 / 3.0);
        assert!(CausalLanguageModelling::score(&m, MetricName::Loss) == -m.loss);
    }

    #[test]
    fn block_sizes_outside_the_context_are_refused() {
        assert!(check_block_size(512, 1024).is_ok());
        let e = check_block_size(2048, 1024).unwrap_err().to_string();
        assert!(e.contains("2048") && e.contains("1024"), "{e}");
        assert!(check_block_size(1, 1024).is_err());
    }
}
