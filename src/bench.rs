//! `headstart bench`: training samples/s per strategy, with the step's
//! FLOPs and model FLOPs utilisation. Each timed step is the fit loop's own
//! ([`crate::train::fit::micro_step`] and [`crate::train::fit::update`]):
//! the frozen prefix outside autodiff, seeded dropout, clipping, the
//! schedule and per-group rates. The PyTorch side of the comparison is
//! scripts/bench_pytorch.py, run on the same machine.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use crate::cost::energy::process_usage;
use crate::cost::flops::{lora_step_flops, train_step_flops};
use crate::cost::peak::Peak;
use crate::hub::Checkpoint;
use crate::models::bert::Bert;
use crate::models::lora::adapter_flops;
use crate::models::params::SeededRng;
use crate::models::state::{self, Source};
use crate::models::{Architecture, TaskModel, group_of};
use crate::strategy::Strategy;
use crate::tasks::Task;
use crate::tasks::classification::{LabelMap, TextClassification, TextSplit};
use crate::tokenize::{Encoded, TextTokenizer};
use crate::train::config::{Resolved, TrainConfig};
use crate::train::fit::{Micro, micro_step, update, with_adapters};
use crate::train::optim::{AdamW, AdamWConfig, GradAccumulator};

pub mod lm;

/// How this binary was built: "release", or "dev" when debug assertions
/// are compiled in (dependencies then run slower too, unless the dev
/// profile turns their assertions off).
pub fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// The global allocator the `headstart` binary is built with: "mimalloc"
/// (the default `mimalloc` feature) or "system".
pub fn allocator() -> &'static str {
    if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else {
        "system"
    }
}

/// Refuses to benchmark a dev build unless `allow_dev`; a dev build that is
/// allowed is announced on stderr.
pub fn check_build(allow_dev: bool) -> Result<()> {
    if build_kind() == "release" {
        return Ok(());
    }
    if !allow_dev {
        bail!(
            "this headstart is a dev build (debug assertions compiled in): its step times are not \
             the tool's. Build with `cargo build --release` and run target/release/headstart \
             (scripts/bench.sh does), or pass --allow-dev-build to time this build anyway"
        );
    }
    eprintln!(
        "WARNING: timing a DEV build (--allow-dev-build): the figures are not release figures \
         and say \"build\": \"dev\""
    );
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub framework: &'static str,
    /// [`build_kind`]: "release" or "dev".
    pub build: &'static str,
    /// [`allocator`]: "mimalloc" or "system".
    pub allocator: &'static str,
    pub strategy: String,
    pub batch: usize,
    pub seq: usize,
    pub steps: usize,
    pub seconds_per_step: f64,
    pub samples_per_s: f64,
    /// `batch * seq / seconds_per_step` (for images, `seq` is 1).
    pub tokens_per_s: f64,
    pub flops_per_step: f64,
    pub achieved_flops_per_s: f64,
    pub mfu: f64,
    /// CPU seconds (user + system, all threads) over wall seconds in the
    /// timed steps: how many cores the step kept busy (`null` without
    /// /proc).
    pub cpus_used: Option<f64>,
    /// Minor + major page faults per timed step (`null` without /proc).
    pub page_faults_per_step: Option<f64>,
    /// The process's peak resident memory from this strategy's start (model
    /// built, warm-up and timed steps), MiB (`null` without /proc). It
    /// includes what the process already held: the weights, and memory the
    /// allocator kept from strategies before it in the same run; compare
    /// strategies one per process.
    pub peak_rss_mib: Option<f64>,
}

/// The work each timed step does.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    pub batch: usize,
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
}

impl StepShape {
    /// Family `A` from `model_dir`'s config on the autodiff `device`, once
    /// the shape is checked: at least one row and one step, rows of 2 up to
    /// the model's positions (`why` says what a row holds).
    fn body_for<A: Architecture>(&self, model_dir: &Path, device: &Device, why: &str) -> Result<A> {
        if self.batch == 0 || self.steps == 0 {
            bail!("--batch and --steps must be at least 1");
        }
        let body = A::from_config_file(&model_dir.join("config.json"), &device.clone().autodiff())?;
        if self.seq < 2 || self.seq > body.max_positions() {
            bail!(
                "--seq {}: use 2..={} ({why})",
                self.seq,
                body.max_positions()
            );
        }
        Ok(body)
    }
}

/// Times training steps of each strategy on `batch` sequences of `seq`
/// tokens: [CLS], ids drawn from the model's vocabulary, [SEP].
pub fn train_steps(
    model_dir: &Path,
    strategies: &[Strategy],
    shape: StepShape,
    peak: &Peak,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    let StepShape { batch, seq, .. } = shape;
    let body: Bert = shape.body_for(
        model_dir,
        device,
        "[CLS] and [SEP] plus tokens, within the model's positions",
    )?;
    let tokenizer = TextTokenizer::from_dir(model_dir)?;
    let vocab = body.config.vocab_size as u64;
    let special = |t: &str, fallback: u32| tokenizer.token_to_id(t).unwrap_or(fallback);
    let (cls, sep) = (special("[CLS]", 101), special("[SEP]", 102));
    let mut rng = SeededRng::new(0);
    let items: Vec<Encoded> = (0..batch)
        .map(|_| {
            let mut ids = vec![cls];
            ids.extend((1..seq - 1).map(|_| (rng.next_u64() % vocab) as u32));
            ids.push(sep);
            Encoded {
                type_ids: vec![0; ids.len()],
                ids,
            }
        })
        .collect();
    let split = TextSplit {
        labels: (0..batch).map(|i| i % 2).collect(),
        items,
    };
    let task = TextClassification {
        labels: LabelMap {
            labels: vec!["a".into(), "b".into()],
        },
        pad_id: tokenizer.pad_id,
    };
    let checkpoint = Checkpoint::load(model_dir)?;
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

/// Times training steps of each strategy on `batch` images of `size` x
/// `size` pixels (seeded noise) through image family `A`: `model` is a
/// weights file (with its family's defaults), a model directory, or
/// nothing (the reference configuration of variant `arch`, e.g. ResNet-18
/// for `resnet18`, with scratch weights; speed does not depend on them).
pub fn image_steps<A: Architecture>(
    arch: &str,
    model: Option<&Path>,
    size: u32,
    strategies: &[Strategy],
    shape: StepShape,
    peak: &Peak,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    use crate::data::preprocess::Recipe;
    use crate::tasks::image::{ImageClassification, ImageSplit};
    if shape.batch == 0 || shape.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let train_device = device.clone().autodiff();
    // images made at the crop size, so a step resizes nothing: the
    // PyTorch side starts from a ready tensor, and a 224 -> 256 resize and
    // crop of every image each step was 12-15% of a frozen MobileNetV2's
    // step; what remains (bytes to normalised floats) is ~1-2%
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..10).map(|i| i.to_string()).collect(),
        },
        recipe: Recipe {
            resize: size,
            ..Recipe::imagenet(size)
        },
        seed: 0,
    };
    task.recipe.check()?;
    let body = match model {
        Some(m) => A::from_config_file(&m.join("config.json"), &train_device)?,
        None => A::reference_named(arch, &train_device)?,
    };
    let body = task.adapt_body(body);
    let mut rng = SeededRng::new(0);
    let images = (0..shape.batch)
        .map(|_| {
            image::RgbImage::from_fn(size, size, |_, _| {
                let v = rng.next_u64();
                image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
            })
        })
        .collect();
    let split = ImageSplit::from_images(
        images,
        (0..shape.batch).map(|i| i % 10).collect(),
        &task.recipe,
    );
    let checkpoint = model.map(Checkpoint::open).transpose()?;
    time_strategies(
        body,
        &task,
        &split,
        checkpoint.as_ref(),
        strategies,
        shape,
        1,
        peak,
        device,
    )
}

/// Times [`micro_step`] + [`update`] of each strategy on one batch (all of `split`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn time_strategies<A: Architecture, T: Task>(
    body: A,
    task: &T,
    split: &T::Split,
    checkpoint: Option<&Checkpoint>,
    strategies: &[Strategy],
    shape: StepShape,
    seq: usize,
    peak: &Peak,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    let StepShape {
        batch,
        steps,
        warmup,
        ..
    } = shape;
    let train_device = device.clone().autodiff();
    let chunk: Vec<usize> = (0..batch).collect();
    let mut results = Vec::new();
    for strategy in strategies {
        let reset = crate::cost::energy::reset_peak_rss();
        let head = task.new_head(&body, &train_device);
        let blank = TaskModel {
            body: body.clone(),
            head,
        };
        let n = blank.num_groups();
        strategy.check(n)?;
        let source = match checkpoint {
            Some(c) => Source::Pretrained(c),
            None => Source::Scratch,
        };
        let (model, _) = state::load(blank, source, 0)?;
        let trainable = strategy.trainable(n, 0);
        let config = TrainConfig {
            strategy: *strategy,
            batch_size: batch,
            max_steps: Some(warmup + steps),
            ..TrainConfig::default()
        };
        let lora = config.lora();
        let mut model = with_adapters(model, &config)?.set_trainable(&trainable);
        if lora.is_some() {
            model = model.train_only_adapters();
        }
        let groups = model.body.groups();
        let lr_scale = strategy.lr_scale(n);
        let resolved = Resolved::new(&config, batch);
        let mut opt = AdamW::new(AdamWConfig::default());
        let mut acc = GradAccumulator::default();
        let micro = Micro {
            seed: 0,
            frozen: strategy.frozen_prefix(n, 0),
            grad_accum: 1,
        };
        let mut timed = 0.0;
        let mut used: Option<(f64, u64)> = Some((0.0, 0));
        for i in 0..warmup + steps {
            let before = process_usage();
            let t0 = Instant::now();
            micro_step(
                &model,
                task,
                split,
                &chunk,
                None,
                &micro,
                &train_device,
                &mut acc,
            );
            let scale_of = |path: &str| lr_scale[group_of(&groups, path)];
            model = update(model, &mut opt, &mut acc, &config, &resolved, i, &scale_of).0;
            // Wait for the device.
            train_device
                .sync()
                .map_err(|e| anyhow::anyhow!("the device failed: {e:?}"))?;
            if i >= warmup {
                timed += t0.elapsed().as_secs_f64();
                used = match (used, before, process_usage()) {
                    (Some((cpu, faults)), Some(a), Some(b)) => Some((
                        cpu + b.cpu_seconds - a.cpu_seconds,
                        faults + b.page_faults.saturating_sub(a.page_faults),
                    )),
                    _ => None,
                };
            }
        }
        let per_step = timed / steps as f64;
        let group_flops = model.body.group_flops(batch, seq);
        let head_flops = task.head_flops(&model.body, batch);
        let head_backward = task.head_backward_flops(&model.body, batch);
        let flops = match lora {
            Some(_) => lora_step_flops(
                &group_flops,
                &adapter_flops(&model, &groups, batch * seq),
                head_flops,
                head_backward,
                &trainable,
                false,
            ),
            None => train_step_flops(&group_flops, head_flops, head_backward, &trainable, false),
        };
        results.push(BenchResult {
            framework: "headstart",
            build: build_kind(),
            allocator: allocator(),
            strategy: strategy.to_string(),
            batch,
            seq,
            steps,
            seconds_per_step: per_step,
            samples_per_s: batch as f64 / per_step,
            tokens_per_s: (batch * seq) as f64 / per_step,
            flops_per_step: flops,
            achieved_flops_per_s: flops / per_step,
            mfu: flops / per_step / peak.flops_per_s,
            cpus_used: used.map(|(cpu, _)| cpu / timed),
            page_faults_per_step: used.map(|(_, faults)| faults as f64 / steps as f64),
            peak_rss_mib: reset
                .then(crate::cost::energy::read_peak_rss_gib)
                .flatten()
                .map(|gib| gib * 1024.0),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dev_build_is_refused_unless_allowed() {
        // Tests run in whatever profile they were built in: check both ways.
        if cfg!(debug_assertions) {
            assert_eq!(super::build_kind(), "dev");
            let e = super::check_build(false).unwrap_err().to_string();
            assert!(e.contains("dev build") && e.contains("--release"), "{e}");
            assert!(e.contains("--allow-dev-build"), "{e}");
        } else {
            assert_eq!(super::build_kind(), "release");
            super::check_build(false).unwrap();
        }
        super::check_build(true).unwrap();
    }

    #[test]
    fn a_step_shape_outside_the_model_is_a_clear_error() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
        let device = burn::tensor::Device::default();
        let peak = crate::cost::peak::Peak {
            flops_per_s: 1e9,
            how: "test".into(),
        };
        let shape = |seq| super::StepShape {
            batch: 2,
            seq,
            steps: 1,
            warmup: 0,
        };
        for seq in [0, 1, 100_000] {
            let err =
                super::train_steps(&dir, &[super::Strategy::Head], shape(seq), &peak, &device)
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(&format!("--seq {seq}")), "{err}");
        }
        let r =
            super::train_steps(&dir, &[super::Strategy::Head], shape(8), &peak, &device).unwrap();
        assert_eq!(r[0].seq, 8);
        assert_eq!(r[0].build, super::build_kind());
        assert!(r[0].cpus_used.unwrap() >= 0.0);
        assert!(r[0].page_faults_per_step.is_some());
        let rss = r[0].peak_rss_mib.expect("peak RSS on Linux");
        assert!(rss > 1.0 && rss < 64.0 * 1024.0, "peak RSS {rss} MiB");
        assert!(r[0].flops_per_step > 0.0);
    }

    #[test]
    fn an_image_variant_is_timed_at_its_own_size() {
        // `--arch resnet18` without weights is ResNet-18, not the family's
        // reference ResNet-50: 1.81 against 4.09 G multiply-adds at 224 px
        use crate::models::resnet::ResNet;
        let device = burn::tensor::Device::default();
        let peak = crate::cost::peak::Peak {
            flops_per_s: 1e9,
            how: "test".into(),
        };
        let shape = super::StepShape {
            batch: 1,
            seq: 1,
            steps: 1,
            warmup: 0,
        };
        let flops = |arch| {
            super::image_steps::<ResNet>(
                arch,
                None,
                32,
                &[super::Strategy::Head],
                shape,
                &peak,
                &device,
            )
            .unwrap()[0]
                .flops_per_step
        };
        let ratio = flops("resnet18") / flops("resnet50");
        assert!((ratio - 1.81 / 4.09).abs() < 0.03, "{ratio}");
    }
}
