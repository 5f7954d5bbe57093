//! Beam search as transformers' `generate(num_beams=B, do_sample=False)`
//! runs it (transformers 5): each step every live beam's next-token
//! log-probabilities (after the no-repeat-n-gram ban) are added to its
//! score; the best `max(2, 1 + #eos) x B` continuations are taken; those
//! ending in an end token (or at the length limit) among the best B are
//! finished hypotheses scored by `sum of log-probs / generated length ^
//! length_penalty`, the best B others go on. With `early_stopping=False`
//! (transformers' default) an example stops once B hypotheses are finished
//! and the best live beam, normalised by the current length, cannot beat
//! the worst of them. Returned: each example's best finished hypothesis,
//! its end token included.
//!
//! Examples are batched (their beams are rows of one KV cache, reordered
//! each step); an example that stops leaves the batch. Parity with
//! transformers on `tests/fixtures/gpt2/beam_reference.json`
//! (`scripts/make_beam_reference.py`).

use anyhow::{Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{Generated, Padded, Stop, check_prompts, left_pad};
use crate::models::causal::{CausalLm, EncoderStates, KvCache};

/// Beam-search settings.
#[derive(Clone, Debug, PartialEq)]
pub struct BeamSearch {
    /// Beams per example (1 is greedy decoding).
    pub beams: usize,
    /// Exponent of the generated length dividing a finished hypothesis's
    /// summed log-probability (transformers' `length_penalty`, default 1):
    /// above 0 favours longer outputs, below 0 shorter ones.
    pub length_penalty: f64,
    /// No n-gram of this size occurs twice in an output (0: no limit).
    pub no_repeat_ngram: usize,
}

impl Default for BeamSearch {
    fn default() -> Self {
        Self {
            beams: 4,
            length_penalty: 1.0,
            no_repeat_ngram: 0,
        }
    }
}

impl BeamSearch {
    pub fn check(&self) -> Result<()> {
        if self.beams == 0 {
            bail!("--beams must be at least 1");
        }
        if !self.length_penalty.is_finite() {
            bail!("--length-penalty must be a finite number");
        }
        Ok(())
    }
}

/// What decoding starts from.
#[allow(clippy::large_enum_variant)] // a short-lived argument, never stored
pub enum Start<'a> {
    /// Token prompts (none empty), left-padded into one batch.
    Prompts(&'a [Vec<u32>]),
    /// Input embeddings `[examples, positions, hidden]` (an image prefix).
    Prefix(Tensor<3>),
    /// Input embeddings (the start tokens' embeddings) of a decoder whose
    /// every step cross-attends to `memory` (an image's encoder states).
    Attending {
        prefix: Tensor<3>,
        memory: EncoderStates,
    },
}

/// transformers' stand-in for minus infinity in beam scores.
const NEG: f32 = -1.0e9;

#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

struct Example {
    /// Prompt tokens (for the n-gram ban); empty for a prefix.
    prompt: Vec<u32>,
    running: Vec<Beam>,
    /// Finished hypotheses, best first, at most `beams`.
    finished: Vec<Beam>,
    done: bool,
    key_mask: Vec<f32>,
    next_pos: i64,
}

/// Decodes every example of `start` by beam search; see the module doc.
pub fn beam_search<A: CausalLm>(
    model: &A,
    start: Start<'_>,
    max_new: usize,
    opts: &BeamSearch,
    stop: &[u32],
    device: &Device,
) -> Result<Vec<Generated>> {
    opts.check()?;
    let (start, memory) = match start {
        Start::Attending { prefix, memory } => (Start::Prefix(prefix), Some(memory)),
        other => (other, None),
    };
    let beams = opts.beams;
    let (n, context) = match &start {
        Start::Prompts(p) => (p.len(), check_prompts(p, max_new, model.max_positions())?),
        Start::Prefix(x) | Start::Attending { prefix: x, .. } => {
            let [b, p, _] = x.dims();
            if p == 0 {
                bail!("the prefix is empty: give at least one position");
            }
            if p + max_new > model.max_positions() {
                bail!(
                    "a prefix of {p} positions plus {max_new} new tokens exceeds the model's context of {} positions",
                    model.max_positions()
                );
            }
            (b, p)
        }
    };
    if n == 0 || max_new == 0 {
        return Ok(vec![Generated::unfinished(); n]);
    }
    let fresh = |prompt: Vec<u32>, key_mask: Vec<f32>, next_pos: i64| Example {
        prompt,
        running: (0..beams)
            .map(|j| Beam {
                tokens: Vec::new(),
                score: if j == 0 { 0.0 } else { NEG },
            })
            .collect(),
        finished: Vec::new(),
        done: false,
        key_mask,
        next_pos,
    };
    // every example's row repeated once per beam
    let rows = n * beams;
    let mut cache = KvCache::new(model.num_layers());
    let (mut examples, mut logits) = match start {
        Start::Prompts(prompts) => {
            let Padded { ids, pos, mask } = left_pad(prompts, context, beams);
            let examples: Vec<Example> = prompts
                .iter()
                .map(|p| {
                    let pad = context - p.len();
                    let m: Vec<f32> = (0..context).map(|i| f32::from(i >= pad)).collect();
                    fresh(p.clone(), m, p.len() as i64)
                })
                .collect();
            let ints = |v: Vec<i64>| {
                Tensor::<2, Int>::from_data(TensorData::new(v, [rows, context]), device)
            };
            let logits = model.forward_cached(
                ints(ids),
                ints(pos),
                Tensor::from_data(TensorData::new(mask, [rows, context]), device),
                &mut cache,
            );
            (examples, logits)
        }
        Start::Prefix(x) => {
            let idx: Vec<i64> = (0..n)
                .flat_map(|e| (0..beams).map(move |_| e as i64))
                .collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows]), device);
            cache.memory = memory.map(|m| m.select(idx.clone()));
            let x = x.select(0, idx);
            let pos: Vec<i64> = (0..rows).flat_map(|_| 0..context as i64).collect();
            let logits = model.forward_embeds(
                x,
                Tensor::<2, Int>::from_data(TensorData::new(pos, [rows, context]), device),
                Tensor::ones([rows, context], device),
                Some(&mut cache),
            );
            let examples = (0..n)
                .map(|_| fresh(Vec::new(), vec![1.0; context], context as i64))
                .collect();
            (examples, logits)
        }
        Start::Attending { .. } => unreachable!("an attending start is a prefix with memory"),
    };
    let keep = (2usize.max(1 + stop.len())) * beams;
    // active examples, in the order of their rows in the cache
    let mut active: Vec<usize> = (0..n).collect();
    for step in 0..max_new {
        let [r, s, v] = logits.dims();
        let last: Vec<f32> = logits
            .slice([0..r, s - 1..s, 0..v])
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("logits: {e:?}"))?;
        let generated = step + 1;
        let at_limit = generated == max_new;
        let norm = (generated as f64).powf(opts.length_penalty) as f32;
        let mut all_hit = true;
        let mut next_rows = Vec::new();
        let mut next_tokens = Vec::new();
        for (slot, &e) in active.iter().enumerate() {
            let ex = &mut examples[e];
            // candidates (accumulated score, beam, token)
            let mut cand: Vec<(f32, usize, u32)> = Vec::with_capacity(beams * v);
            for (j, beam) in ex.running.iter().enumerate() {
                let row = &last[(slot * beams + j) * v..(slot * beams + j + 1) * v];
                let mut lp = log_softmax(row);
                if opts.no_repeat_ngram > 0 {
                    let seq: Vec<u32> = ex.prompt.iter().chain(&beam.tokens).copied().collect();
                    for t in banned(&seq, opts.no_repeat_ngram) {
                        lp[t as usize] = f32::NEG_INFINITY;
                    }
                }
                cand.extend(
                    lp.iter()
                        .enumerate()
                        .map(|(t, &l)| (l + beam.score, j, t as u32)),
                );
            }
            // the best `keep`, ties to the lower flat index as torch.topk does on CPU
            cand.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
            cand.truncate(keep);
            let hits: Vec<bool> = cand
                .iter()
                .map(|&(_, _, t)| at_limit || stop.contains(&t))
                .collect();
            all_hit &= hits.iter().all(|&h| h);
            // the best B that did not end go on (ended ones at -1e9 fill the gaps)
            let mut order: Vec<usize> = (0..cand.len()).collect();
            order.sort_by(|&a, &b| {
                let sa = cand[a].0 + if hits[a] { NEG } else { 0.0 };
                let sb = cand[b].0 + if hits[b] { NEG } else { 0.0 };
                sb.total_cmp(&sa).then(a.cmp(&b))
            });
            let running: Vec<Beam> = order[..beams]
                .iter()
                .map(|&k| {
                    let (score, j, t) = cand[k];
                    let mut tokens = ex.running[j].tokens.clone();
                    tokens.push(t);
                    Beam {
                        score: score + if hits[k] { NEG } else { 0.0 },
                        tokens,
                    }
                })
                .collect();
            // ended among the best B: finished hypotheses, normalised by length
            for k in 0..beams.min(cand.len()) {
                if hits[k] {
                    let (score, j, t) = cand[k];
                    let mut tokens = ex.running[j].tokens.clone();
                    tokens.push(t);
                    ex.finished.push(Beam {
                        score: score / norm,
                        tokens,
                    });
                }
            }
            ex.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
            ex.finished.truncate(beams);
            let sources: Vec<usize> = order[..beams].iter().map(|&k| cand[k].1).collect();
            ex.running = running;
            // early stop: every slot finished, and the best live beam at the
            // current length cannot beat the worst finished hypothesis
            let best_live = ex.running[0].score / norm;
            let worst = ex.finished.last().map_or(NEG, |b| b.score);
            if ex.finished.len() == beams && best_live <= worst {
                ex.done = true;
            } else {
                for (j, src) in sources.into_iter().enumerate() {
                    next_rows.push(slot * beams + src);
                    next_tokens.push(ex.running[j].tokens.last().copied().unwrap_or(0));
                }
            }
        }
        if all_hit || at_limit {
            break;
        }
        active.retain(|&e| !examples[e].done);
        if active.is_empty() {
            break;
        }
        cache.select(&next_rows, device);
        let r = next_rows.len();
        let mut mask = Vec::with_capacity(r);
        let mut pos = Vec::with_capacity(r);
        for &e in &active {
            let ex = &mut examples[e];
            ex.key_mask.push(1.0);
            for _ in 0..beams {
                mask.extend_from_slice(&ex.key_mask);
                pos.push(ex.next_pos);
            }
            ex.next_pos += 1;
        }
        let total = examples[active[0]].key_mask.len();
        logits = model.forward_cached(
            Tensor::<2, Int>::from_data(
                TensorData::new(next_tokens.iter().map(|&t| t as i64).collect(), [r, 1]),
                device,
            ),
            Tensor::<2, Int>::from_data(TensorData::new(pos, [r, 1]), device),
            Tensor::from_data(TensorData::new(mask, [r, total]), device),
            &mut cache,
        );
    }
    Ok(examples
        .into_iter()
        .map(|ex| {
            let best = ex
                .finished
                .into_iter()
                .next()
                .unwrap_or_else(|| ex.running[0].clone());
            let stop = match best.tokens.last() {
                Some(t) if stop.contains(t) => Stop::Eos,
                _ => Stop::Length,
            };
            Generated {
                ids: best.tokens,
                stop,
            }
        })
        .collect())
}

/// log-softmax of one row, in f32 as torch computes it.
fn log_softmax(x: &[f32]) -> Vec<f32> {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = x.iter().map(|&v| (v - max).exp()).sum();
    let log_sum = sum.ln();
    x.iter().map(|&v| v - max - log_sum).collect()
}

/// Tokens that would repeat an n-gram of `seq` (transformers'
/// `NoRepeatNGramLogitsProcessor`): those that followed an earlier
/// occurrence of `seq`'s last n - 1 tokens.
fn banned(seq: &[u32], n: usize) -> Vec<u32> {
    if seq.len() + 1 < n {
        return Vec::new();
    }
    let tail = &seq[seq.len() + 1 - n..];
    seq.windows(n)
        .filter(|w| w[..n - 1] == *tail)
        .map(|w| w[n - 1])
        .collect()
}

#[cfg(test)]
mod tests;
