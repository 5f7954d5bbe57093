//! Generated samples for the language-model comparison: held-out documents
//! cut after a few words, continued greedily by the untuned model and by
//! each strategy's tuned run, beside the true continuation.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::RunRecord;
use crate::data::table::Example;

/// A held-out document's opening, its true continuation and what each
/// model wrote after it (greedy decoding).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub prompt: String,
    pub reference: String,
    /// (who wrote it: a strategy, or the model before tuning; the text).
    pub outputs: Vec<(String, String)>,
}

/// Words of a held-out document that prompt the samples.
const PROMPT_WORDS: usize = 8;
/// Words of the true continuation shown beside the samples.
const REFERENCE_WORDS: usize = 60;
/// Tokens each model writes.
const SAMPLE_TOKENS: usize = 60;

/// `k` held-out documents (long enough to have a continuation, spread over
/// the test set) continued greedily by the base model and by the first
/// seed of each strategy at the largest training size.
pub(super) fn lm_samples(
    base_model: &Path,
    runs: &[RunRecord],
    test: &[Example],
    k: usize,
    device: &Device,
) -> Result<Vec<Sample>> {
    let long: Vec<&Example> = test
        .iter()
        .filter(|e| e.text.split_whitespace().count() > PROMPT_WORDS + 4)
        .collect();
    if long.is_empty() {
        return Ok(Vec::new());
    }
    let step = (long.len() / k).max(1);
    let chosen: Vec<&Example> = long.iter().step_by(step).take(k).copied().collect();
    let prompts: Vec<(String, String)> = chosen
        .iter()
        .map(|e| {
            let words: Vec<&str> = e.text.split_whitespace().collect();
            let end = (PROMPT_WORDS + REFERENCE_WORDS).min(words.len());
            let more = if words.len() > end { " ..." } else { "" };
            (
                words[..PROMPT_WORDS].join(" "),
                format!("{}{more}", words[PROMPT_WORDS..end].join(" ")),
            )
        })
        .collect();
    let size = runs.iter().filter_map(|r| r.train_size).max();
    let mut writers: Vec<(String, PathBuf)> =
        vec![("pretrained, untuned".to_string(), base_model.to_path_buf())];
    let mut seen = Vec::new();
    for r in runs.iter().filter(|r| r.train_size == size) {
        if !seen.contains(&r.strategy) {
            seen.push(r.strategy);
            writers.push((r.strategy.to_string(), r.dir.clone()));
        }
    }
    let mut samples: Vec<Sample> = prompts
        .iter()
        .map(|(p, r)| Sample {
            prompt: p.clone(),
            reference: r.clone(),
            outputs: Vec::new(),
        })
        .collect();
    let greedy = crate::generate::Sampling::greedy();
    for (who, path) in writers {
        let lm = crate::generate::load(&path, device)?;
        let ids = prompts
            .iter()
            .map(|(p, _)| {
                let mut ids = lm.encode(p)?;
                // a tokenizer that ends every text with EOS would end the prompt
                while ids.len() > 1 && ids.last().is_some_and(|t| lm.eos.contains(t)) {
                    ids.pop();
                }
                Ok(ids)
            })
            .collect::<Result<Vec<_>>>()?;
        // as much as the context leaves after the longest prompt
        let longest = ids.iter().map(Vec::len).max().unwrap_or(0);
        let max_new = SAMPLE_TOKENS.min(lm.max_positions.saturating_sub(longest));
        if max_new == 0 {
            continue;
        }
        let out = lm.generate_ids(&ids, max_new, &greedy, device)?;
        for (sample, g) in samples.iter_mut().zip(out) {
            sample.outputs.push((who.clone(), lm.decode(&g.ids)?));
        }
    }
    Ok(samples)
}
