//! `headstart generate`: its flags, prompt reading, greedy, sampled or
//! beam-search decoding in batches, and the text or JSON-lines output.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// A run directory, an exported or HF model directory, a hub id, a GGUF file, or a
    /// PEFT LoRA adapter directory (adapter_config.json), loaded on its base model.
    #[arg(long)]
    pub model: String,
    /// The base model of a PEFT adapter given as --model (default: the adapter's
    /// base_model_name_or_path).
    #[arg(long)]
    pub base: Option<String>,
    /// A prompt (repeat the flag for several, generated as one batch).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Prompts, one per line (blank lines skipped).
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 = greedy decoding (the most likely token each step).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample only among the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probability reaches P.
    #[arg(long)]
    pub top_p: Option<f64>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prompts generated together.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Beam search with this many beams (as transformers' num_beams; 1: greedy or sampling).
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// Beam search: a finished beam's log-probability is divided by its length to this power.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f64,
    /// Beam search: no n-gram of this size repeats in an output (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram: usize,
    /// JSON lines {"prompt", "completion", "new_tokens", "stop"} instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GenerateArgs, device: burn::tensor::Device) -> Result<()> {
    let GenerateArgs {
        model,
        base,
        prompt,
        file,
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        seed,
        batch_size,
        beams,
        length_penalty,
        no_repeat_ngram,
        json,
    } = args;
    let sampling = headstart::generate::Sampling {
        temperature,
        top_k,
        top_p,
        seed,
    };
    sampling.check()?;
    let beam = headstart::generate::BeamSearch {
        beams,
        length_penalty,
        no_repeat_ngram,
    };
    beam.check()?;
    let searching = beams > 1 || no_repeat_ngram > 0;
    if searching && (temperature > 0.0 || top_k.is_some() || top_p.is_some()) {
        anyhow::bail!(
            "beam search (--beams, --no-repeat-ngram) is deterministic; --temperature, \
             --top-k and --top-p apply to sampling (--beams 1, no --no-repeat-ngram)"
        );
    }
    let mut prompts = prompt;
    if let Some(f) = &file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompts from {}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if prompts.is_empty() {
        anyhow::bail!("nothing to continue: give --prompt TEXT or --file FILE");
    }
    let lm = headstart::generate::load_with_base(&model, base.as_deref(), &device)?;
    let started = std::time::Instant::now();
    let mut new_tokens = 0;
    for chunk in prompts.chunks(batch_size.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| lm.encode(p)).collect::<Result<_>>()?;
        let out = if searching {
            lm.beam_ids(&ids, max_new_tokens, &beam, &device)?
        } else {
            lm.generate_ids(&ids, max_new_tokens, &sampling, &device)?
        };
        for (p, g) in chunk.iter().zip(out) {
            new_tokens += g.ids.len();
            let completion = lm.decode(&g.ids)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "prompt": p,
                        "completion": completion,
                        "new_tokens": g.ids.len(),
                        "stop": g.stop,
                    })
                );
            } else {
                println!("{p}{completion}\n");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{new_tokens} new tokens for {} prompts in {secs:.2} s ({:.1} tokens/s)",
        prompts.len(),
        new_tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}
