//! `headstart bench`: its flags and the dispatch to the text, image and
//! language-model benchmarks of [`headstart::bench`].

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use headstart::find_model;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// A text model, or with --arch an image family (mobilenet_v2, ...) and
    /// optionally its weights file or directory.
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Benchmark an image family (mobilenet_v2, ...) on --image-size images.
    #[arg(long)]
    pub arch: Option<String>,
    #[arg(long, default_value_t = 224)]
    pub image_size: u32,
    #[arg(long, default_value = "full,freeze:4,head")]
    pub strategies: String,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// With a causal LM: time greedy generation of this many new tokens after
    /// --batch prompts of --seq tokens (--steps runs) instead of training.
    #[arg(long)]
    pub generate: Option<usize>,
    /// The peak FLOP rate MFU is measured against, GFLOP/s (default: on a
    /// CPU, measured once by an FMA loop on all cores and cached).
    #[arg(long)]
    pub peak_gflops: Option<f64>,
    /// Time a dev build anyway (refused by default: its figures are not
    /// the release binary's); the output then says "build": "dev".
    #[arg(long)]
    pub allow_dev_build: bool,
}

pub fn run(args: BenchArgs, device: burn::tensor::Device) -> Result<()> {
    let BenchArgs {
        model,
        arch,
        image_size,
        strategies,
        batch,
        seq,
        steps,
        warmup,
        generate,
        peak_gflops,
        allow_dev_build,
    } = args;
    headstart::bench::check_build(allow_dev_build)?;
    let dir = if arch.is_some() {
        PathBuf::new()
    } else {
        find_model(&model)?
    };
    let strategies: Vec<headstart::strategy::Strategy> = strategies
        .split(',')
        .map(str::parse)
        .collect::<Result<_>>()?;
    let peak = match peak_gflops {
        Some(g) => headstart::cost::peak::from_gflops(g)?,
        None => headstart::compute_peak_refreshed(&device),
    };
    eprintln!(
        "{} build, {} allocator; peak: {:.1} GFLOP/s ({})",
        headstart::bench::build_kind(),
        headstart::bench::allocator(),
        peak.flops_per_s / 1e9,
        peak.how
    );
    let shape = headstart::bench::StepShape {
        batch,
        seq,
        steps,
        warmup,
    };
    let results = match arch.as_deref() {
        Some(arch) => {
            let family = headstart::models::vision::family_for_arch(arch).with_context(|| {
                format!(
                    "bench --arch {arch}: image families are {}",
                    headstart::models::vision::arch_names().join(", ")
                )
            })?;
            let path = std::path::Path::new(&model);
            let weights = (path.exists()).then_some(path);
            headstart::with_image_family!(family, A => headstart::bench::image_steps::<A>(
                &headstart::models::vision::normalise(arch),
                weights,
                image_size,
                &strategies,
                shape,
                &peak,
                &device,
            )?, else unreachable!("{family} is an image family"))
        }
        None => match crate::causal_family(&dir) {
            Some(family) => match generate {
                Some(n) => {
                    let r = headstart::with_causal_family!(family.as_str(), A => headstart::bench::lm::generation::<A>(&dir, shape, n, &device)?, else unreachable!());
                    println!("{}", serde_json::to_string(&r)?);
                    return Ok(());
                }
                None => {
                    headstart::with_causal_family!(family.as_str(), A => headstart::bench::lm::lm_steps::<A>(&dir, &strategies, shape, &peak, &device)?, else unreachable!())
                }
            },
            None if generate.is_some() => {
                bail!("bench --generate times a causal language model; {model} is not one")
            }
            None => headstart::bench::train_steps(&dir, &strategies, shape, &peak, &device)?,
        },
    };
    for r in results {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}
