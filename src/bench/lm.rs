//! `headstart bench` for causal language models: training tokens/s per
//! strategy (the fit loop's own step, LoRA included) and greedy generation
//! tokens/s with the KV cache. The transformers side of the comparison is
//! scripts/bench_lm_pytorch.py, run on the same machine (scripts/bench_lm.sh).

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use super::{BenchResult, StepShape, allocator, build_kind, time_strategies};
use crate::cost::energy::process_usage;
use crate::cost::peak::Peak;
use crate::hub::Checkpoint;
use crate::models::causal::CausalLm;
use crate::models::params::SeededRng;
use crate::strategy::Strategy;
use crate::tasks::causal_lm::{CausalLanguageModelling, LmSplit};

/// `batch` rows of `len` token ids drawn (seeded) from `vocab`.
fn random_rows(batch: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = SeededRng::new(seed);
    (0..batch)
        .map(|_| {
            (0..len)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect()
        })
        .collect()
}

/// Times training steps of each strategy on `batch` packed rows of `seq`
/// token ids (seeded, drawn from the vocabulary: every position is a real
/// token, as in a packed corpus) through causal-LM family `A`.
pub fn lm_steps<A: CausalLm>(
    model_dir: &Path,
    strategies: &[Strategy],
    shape: StepShape,
    peak: &Peak,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    let StepShape { batch, seq, .. } = shape;
    let body: A = shape.body_for(
        model_dir,
        device,
        "a row predicts its tokens after the first, within the model's context",
    )?;
    let eos = body.eos_token_ids().first().copied().unwrap_or(0);
    let split = LmSplit {
        rows: random_rows(batch, seq, body.vocab_size(), 0),
    };
    let task = CausalLanguageModelling { pad_id: eos };
    let checkpoint = Checkpoint::open(model_dir)?;
    time_strategies(
        body,
        &task,
        &split,
        Some(&checkpoint),
        strategies,
        shape,
        seq,
        peak,
        device,
    )
}

/// Greedy generation speed.
#[derive(Debug, Serialize)]
pub struct GenerationResult {
    pub framework: &'static str,
    pub build: &'static str,
    pub allocator: &'static str,
    pub batch: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// Timed generations (after the untimed warm-up ones).
    pub runs: usize,
    /// One generation: the prompt's forward, then `new_tokens` steps.
    pub seconds: f64,
    /// `batch * new_tokens / seconds`.
    pub new_tokens_per_s: f64,
    pub cpus_used: Option<f64>,
}

/// Times greedy generation of `new_tokens` tokens after `batch` seeded
/// random prompts of `shape.seq` tokens (no stop at EOS: every run does the
/// same work), `shape.steps` times after `shape.warmup` untimed runs.
pub fn generation<A: CausalLm>(
    model_dir: &Path,
    shape: StepShape,
    new_tokens: usize,
    device: &Device,
) -> Result<GenerationResult> {
    let StepShape {
        batch,
        seq,
        steps,
        warmup,
    } = shape;
    if batch == 0 || steps == 0 || new_tokens == 0 {
        bail!("--batch, --steps and --generate must be at least 1");
    }
    let body = A::from_config_file(&model_dir.join("config.json"), device)?;
    if seq == 0 || seq + new_tokens > body.max_positions() {
        bail!(
            "--seq {seq} prompt tokens and --generate {new_tokens} new ones: together at most the \
             model's {} positions, the prompt at least 1",
            body.max_positions()
        );
    }
    let body = crate::generate::load_weights(body, model_dir)?;
    let prompts = random_rows(batch, seq, body.vocab_size(), 1);
    let greedy = crate::generate::Sampling::greedy();
    let mut timed = 0.0;
    let mut cpu: Option<f64> = Some(0.0);
    for i in 0..warmup + steps {
        let before = process_usage();
        let t0 = Instant::now();
        let out = crate::generate::generate(&body, &prompts, new_tokens, &greedy, &[], device)?;
        let seconds = t0.elapsed().as_secs_f64();
        if let Some(g) = out.iter().find(|g| g.ids.len() != new_tokens) {
            bail!(
                "generation stopped after {} of {new_tokens} tokens",
                g.ids.len()
            );
        }
        if i >= warmup {
            timed += seconds;
            cpu = match (cpu, before, process_usage()) {
                (Some(c), Some(a), Some(b)) => Some(c + b.cpu_seconds - a.cpu_seconds),
                _ => None,
            };
        }
    }
    let seconds = timed / steps as f64;
    Ok(GenerationResult {
        framework: "headstart",
        build: build_kind(),
        allocator: allocator(),
        batch,
        prompt_tokens: seq,
        new_tokens,
        runs: steps,
        seconds,
        new_tokens_per_s: (batch * new_tokens) as f64 / seconds,
        cpus_used: cpu.map(|c| c / timed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::peak::Peak;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/tied_gqa")
    }

    #[test]
    fn lm_steps_time_full_and_lora_with_their_flops() {
        let device = Device::default();
        let peak = Peak {
            flops_per_s: 1e9,
            how: "test".into(),
        };
        let shape = StepShape {
            batch: 2,
            seq: 8,
            steps: 1,
            warmup: 0,
        };
        let strategies = [Strategy::Full, "lora:4".parse().unwrap()];
        let r =
            lm_steps::<crate::models::llama::Llama>(&fixture(), &strategies, shape, &peak, &device)
                .unwrap();
        let (full, lora) = (&r[0], &r[1]);
        assert_eq!(
            (full.strategy.as_str(), lora.strategy.as_str()),
            ("full", "lora:4")
        );
        assert_eq!(full.tokens_per_s, 16.0 / full.seconds_per_step);
        // LoRA's backward skips the frozen weights' gradients: fewer FLOPs
        assert!(lora.flops_per_step < full.flops_per_step, "{r:?}");
        assert!(lora.flops_per_step > full.flops_per_step / 2.0, "{r:?}");
        let e = lm_steps::<crate::models::llama::Llama>(
            &fixture(),
            &strategies,
            StepShape {
                seq: 100_000,
                ..shape
            },
            &peak,
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--seq 100000"), "{e}");
    }

    #[test]
    fn generation_times_exactly_the_asked_tokens() {
        let device = Device::default();
        let shape = StepShape {
            batch: 2,
            seq: 3,
            steps: 1,
            warmup: 0,
        };
        let r = generation::<crate::models::llama::Llama>(&fixture(), shape, 5, &device).unwrap();
        assert_eq!((r.batch, r.prompt_tokens, r.new_tokens), (2, 3, 5));
        assert!((r.new_tokens_per_s - 10.0 / r.seconds).abs() < 1e-9);
        let e = generation::<crate::models::llama::Llama>(&fixture(), shape, 100_000, &device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--generate 100000"), "{e}");
    }
}
