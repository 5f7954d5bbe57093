//! Testing a causal language model on held-out text: perplexity and
//! next-token accuracy over documents tokenised and packed exactly as the
//! model was trained (`eval --model RUN --data corpus` and `compare`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use super::checkpoint::read_json;
use super::eval::{Spent, costed_eval, exported_model};
use crate::cost::run::{CostOptions, Phases, RunCost};
use crate::data::table::Example;
use crate::models::TaskModel;
use crate::models::causal::CausalLm;
use crate::tasks::causal_lm::{
    CausalLanguageModelling, LmMetrics, LmSplit, NoHead, Pack, check_block_size, lm_rows,
};

/// How held-out text is cut into rows: a run's own block size and packing
/// (from its `config.json`), else the defaults of `train`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rows {
    pub block: Option<usize>,
    pub pack: Pack,
}

impl Rows {
    /// The settings of the run at `path` (a run directory), if it is one.
    pub fn of_run(path: &Path) -> Rows {
        let config: Option<super::RunConfig> = read_json(&path.join("config.json")).ok();
        match config {
            Some(rc) => Rows {
                block: rc
                    .task_state
                    .get("block_size")
                    .and_then(|b| b.as_u64())
                    .map(|b| b as usize)
                    .or(rc.config.block_size),
                pack: rc.config.pack,
            },
            None => Rows {
                block: None,
                pack: Pack::On,
            },
        }
    }
}

/// Perplexity and next-token accuracy of the causal LM at `model` (a run
/// directory or a model directory) on `docs`, with what testing cost.
pub fn evaluate_lm(
    model: &Path,
    docs: &[Example],
    file: &str,
    rows: Rows,
    batch_size: usize,
    device: &Device,
    cost: &CostOptions,
) -> Result<(LmMetrics, RunCost)> {
    let dir = exported_model(model);
    let family = crate::models::model_type(&dir)?;
    crate::with_causal_family!(family.as_str(), A => evaluate_family::<A>(&dir, docs, file, rows, batch_size, device, cost), else bail!(
        "{} is a `{family}` model, not a causal language model (causal-LM families: {})",
        dir.display(),
        crate::models::causal::CAUSAL_FAMILIES.join(", ")
    ))
}

fn evaluate_family<A: CausalLm>(
    dir: &Path,
    docs: &[Example],
    file: &str,
    rows: Rows,
    batch_size: usize,
    device: &Device,
    cost: &CostOptions,
) -> Result<(LmMetrics, RunCost)> {
    let meter = cost.start_meter(device)?;
    let started = Instant::now();
    let mut phases = Phases::default();
    let body = A::from_config_file(&dir.join("config.json"), device)?;
    let block = rows.block.unwrap_or(512.min(body.max_positions()));
    check_block_size(block, body.max_positions())?;
    let eos = *body.eos_token_ids().first().with_context(|| {
        format!(
            "{} names no eos_token_id: documents cannot be joined",
            dir.join("config.json").display()
        )
    })?;
    let model = TaskModel {
        body: crate::generate::load_weights(body, dir)?,
        head: NoHead,
    };
    let tokenizer = crate::tokenize::lm_tokenizer(dir)?;
    let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
    let split = LmSplit {
        rows: lm_rows(&tokenizer, &texts, eos, block, rows.pack)?,
    };
    if split.rows.is_empty() {
        bail!("{file}: no tokens to predict (every document is empty)");
    }
    phases.data = started.elapsed().as_secs_f64();
    let task = CausalLanguageModelling { pad_id: eos };
    costed_eval(
        &model,
        &task,
        &split,
        batch_size,
        device,
        Spent {
            options: cost,
            meter,
            started,
            phases,
        },
    )
}
