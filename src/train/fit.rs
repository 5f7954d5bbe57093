//! The fit loop, for any family and task: model, optimizer, epochs of
//! seeded batches, accumulation, clipping, schedule, validation, best and
//! early stopping, budgets, checkpoints, export. A batch goes
//! `Task::input` -> `TaskModel::features` (the frozen prefix outside
//! autodiff, or the feature cache) -> `Task::loss` -> backward ->
//! [`AdamW::step`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::Device;

use super::cache::Features;
use super::checkpoint::{
    MetricsLog, WeightStore, load_weights, read_json, save_checkpoint, truncate_metrics,
};
use super::config::{ExportChoice, Resolved, RunConfig, Standing, TrainConfig, TrainState};
use super::eval::{eval_flops, predict};
use super::freeze::{ActiveCache, CacheUse, build_cache, cache_wanted};
use super::optim::{AdamW, AdamWConfig, GradAccumulator, schedule};
use super::progress::{Observer, StepLine};
use crate::cost::flops::{lora_step_flops, train_step_flops};
use crate::cost::run::{FlopCount, Phases, RunCost};
use crate::data::split::epoch_order;
use crate::fsutil::write_json_atomic;
use crate::hub::{Checkpoint, read_safetensors};
use crate::models::lora::adapter_flops as lora_flops;
use crate::models::params::host;
use crate::models::state::{self, Source};
use crate::models::{Architecture, TaskModel, group_of};
use crate::tasks::Task;

/// A run's model and data, ready for the loop.
pub struct Prepared<A: Architecture, T: Task> {
    /// The model on the training (autodiff) device, parameters not yet filled.
    pub model: TaskModel<A, T::Head>,
    pub task: T,
    pub train: T::Split,
    pub val: T::Split,
}

/// Where a run goes and what it starts from.
pub struct Setup {
    pub run_dir: PathBuf,
    pub run_config: RunConfig,
    /// The checkpoint a resumed run continues from.
    pub resume_from: Option<PathBuf>,
    pub device: Device,
}

/// What a finished run reports.
pub struct TrainOutcome {
    pub run_dir: PathBuf,
    pub model_dir: PathBuf,
    /// The best validation, described, and its step.
    pub best: Option<(String, usize)>,
    /// Which weights `model/` holds, and why.
    pub exported: String,
    pub state: TrainState,
    pub seconds: f64,
    /// The feature caches the run used (one per freeze boundary).
    pub caches: Vec<CacheUse>,
    /// Time, FLOPs, energy, CO2 and money of this process's part of the run.
    pub cost: RunCost,
}

/// An epoch's end writes a checkpoint when the last one is at least this old.
const EPOCH_CHECKPOINT_INTERVAL_S: f64 = 60.0;

/// Seconds since `*t`, and restarts it.
fn lap(t: &mut Instant) -> f64 {
    let s = t.elapsed().as_secs_f64();
    *t = Instant::now();
    s
}

/// A model of the run's architecture with its head, parameters not yet filled.
pub fn blank<A: Architecture, T: Task>(
    task: &T,
    model_dir: &std::path::Path,
    device: &Device,
) -> Result<TaskModel<A, T::Head>> {
    let body = task.adapt_body(A::from_config_file(&model_dir.join("config.json"), device)?);
    let head = task.new_head(&body, device);
    Ok(TaskModel { body, head })
}

/// `model` with the run's LoRA adapters (zero until loaded from a run's
/// checkpoint), or as it is for other strategies.
pub fn with_adapters<A: Architecture, H: crate::models::Head>(
    model: TaskModel<A, H>,
    config: &TrainConfig,
) -> Result<TaskModel<A, H>> {
    Ok(match config.lora() {
        Some(l) => model.add_lora(&l, config.seed)?.0,
        None => model,
    })
}

/// Runs (or continues) the loop; see the module doc.
pub fn fit<A: Architecture, T: Task>(
    setup: Setup,
    data: Prepared<A, T>,
    started: Instant,
    mut phases: Phases,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let Setup {
        run_dir,
        run_config,
        resume_from,
        device,
    } = setup;
    let RunConfig {
        config, resolved, ..
    } = &run_config;
    let Prepared {
        model,
        task,
        train,
        val,
    } = data;
    let meter = config.cost.start_meter(&device)?;
    let mut phase = Instant::now();
    let mut flops = FlopCount::default();
    let train_device = device.clone().autodiff();
    let model_dir = &run_config.model_dir;

    // model and optimizer
    let n = model.num_groups();
    let mut store = WeightStore::new(config.strategy, n, resolved.epochs, model_dir);
    let adamw = AdamWConfig {
        weight_decay: resolved.weight_decay,
        ..AdamWConfig::default()
    };
    let lora = config.lora();
    let (mut model, mut state, mut opt) = match &resume_from {
        Some(ckpt) => {
            let model = load_weights(with_adapters(model, config)?, ckpt)?;
            let state: TrainState = read_json(&ckpt.join("state.json"))?;
            let opt_tensors = read_safetensors(&ckpt.join("optimizer.safetensors"))?;
            let opt = AdamW::import(adamw, &opt_tensors, &state.optimizer_steps, &train_device)?;
            truncate_metrics(&run_dir.join("metrics.jsonl"), state.step)?;
            obs.line(&format!(
                "resuming {} at step {} (epoch {}, batch {})",
                run_dir.display(),
                state.step,
                state.epoch + 1,
                state.batch_in_epoch
            ));
            (model, state, opt)
        }
        None => {
            let (model, mut report) = if config.strategy.uses_pretrained_weights() {
                let checkpoint = Checkpoint::open(model_dir)?;
                state::load(model, Source::Pretrained(&checkpoint), config.seed)?
            } else {
                state::load(model, Source::Scratch, config.seed)?
            };
            // head parts the task loads itself (`Task::load_head`) are not news
            report
                .new_head
                .retain(|k| T::exports_param(&format!("head.{k}")));
            for line in report.lines() {
                obs.line(&line);
            }
            let crate::models::TaskModel { body, head } = model;
            let (head, lines) = task.load_head(head, config.seed)?;
            for line in lines {
                obs.line(&line);
            }
            let model = crate::models::TaskModel { body, head };
            let model = match &lora {
                Some(l) => {
                    let (model, targets) = model.add_lora(l, config.seed)?;
                    obs.line(&format!(
                        "LoRA r={} alpha={} dropout={} on {}",
                        l.r,
                        l.alpha,
                        l.dropout,
                        targets.join(", ")
                    ));
                    model
                }
                None => model,
            };
            let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
            (model, TrainState::default(), AdamW::new(adamw))
        }
    };
    store.hash_base(&model);
    let store = store;
    phases.load += lap(&mut phase);

    // the loop
    let groups = model.body.groups();
    let group_names: Vec<String> = groups.iter().map(|g| g.name.clone()).collect();
    let val_lengths = T::lengths(&val);
    let train_lengths = T::lengths(&train);
    let micro_per_epoch = train_lengths.len().div_ceil(config.batch_size);
    let lr_scale = config.strategy.lr_scale(n);
    let mut metrics_log = MetricsLog::open(&run_dir.join("metrics.jsonl"))?;
    let mut acc = GradAccumulator::default();
    let mut best_pending = None;
    let mut best_text: Option<String> = None;
    let mut last_checkpoint_at = Instant::now();
    let mut active: Option<ActiveCache> = None;
    let mut caches: Vec<CacheUse> = Vec::new();
    'epochs: while state.epoch < resolved.epochs
        && state.step < resolved.total_steps
        && !state.stopped_early
        && state.budget_reached.is_none()
    {
        let epoch = state.epoch;
        let trainable = config.strategy.trainable(n, epoch);
        let frozen = config.strategy.frozen_prefix(n, epoch);
        model = model.set_trainable(&trainable);
        if lora.is_some() {
            model = model.train_only_adapters();
            let (trainable, total) = crate::models::lora::trainable_params(&model);
            obs.line(&format!(
                "trainable parameters: {trainable} of {total} ({:.3}%)",
                100.0 * trainable as f64 / total.max(1) as f64
            ));
        }
        if config.bn == crate::models::BatchNormMode::Frozen {
            model = model.freeze_batch_norm();
        }
        model.head = task.head_trainable(model.head, epoch);
        task.start_epoch(&train, epoch);
        if !cache_wanted(config, frozen) || task.augmented(&train) {
            caches.extend(active.take().map(|c| c.use_));
        } else if active.as_ref().map(|c| c.use_.boundary) != Some(frozen) {
            caches.extend(active.take().map(|c| c.use_));
            phases.train += lap(&mut phase);
            let c = build_cache(
                &model,
                &task,
                config,
                frozen,
                [&train, &val],
                micro_per_epoch,
                &device,
            )?;
            obs.line(&c.describe(&group_names));
            for (report, lengths) in [(&c.use_.train, &train_lengths), (&c.use_.val, &val_lengths)]
            {
                if report.built {
                    flops.feature_cache += lengths
                        .iter()
                        .map(|&s| model.body.group_flops(1, s)[..frozen].iter().sum::<f64>())
                        .sum::<f64>();
                }
            }
            phases.feature_cache += lap(&mut phase);
            active = Some(c);
        }
        let order = epoch_order(train_lengths.len(), config.seed, epoch);
        let batches: Vec<&[usize]> = order.chunks(config.batch_size).collect();
        let mut step_started = Instant::now();
        let (mut step_samples, mut step_loss) = (0usize, 0.0);
        while state.batch_in_epoch < batches.len() {
            let bi = state.batch_in_epoch;
            let chunk = batches[bi];
            let seq = chunk.iter().map(|&i| train_lengths[i]).max().unwrap_or(0);
            let head = (
                task.head_flops(&model.body, chunk.len()),
                task.head_backward_flops(&model.body, chunk.len()),
            );
            flops.train += match &lora {
                Some(_) => lora_step_flops(
                    &model.body.group_flops(chunk.len(), seq),
                    &lora_flops(&model, &groups, chunk.len() * seq),
                    head.0,
                    head.1,
                    &trainable,
                    active.is_some(),
                ),
                None => train_step_flops(
                    &model.body.group_flops(chunk.len(), seq),
                    head.0,
                    head.1,
                    &trainable,
                    active.is_some(),
                ),
            };
            let cached = active.as_mut().map(|c| {
                c.use_.train_batches += 1;
                &c.train
            });
            let micro = Micro {
                seed: config
                    .seed
                    .wrapping_mul(0x9E37_79B9)
                    .wrapping_add((epoch * micro_per_epoch + bi) as u64),
                frozen,
                grad_accum: config.grad_accum,
            };
            let loss_value = micro_step(
                &model,
                &task,
                &train,
                chunk,
                cached,
                &micro,
                &train_device,
                &mut acc,
            );
            step_loss += loss_value;
            step_samples += chunk.len();
            state.batch_in_epoch += 1;
            let micro_in_step = (bi + 1) % config.grad_accum;
            if micro_in_step != 0 && state.batch_in_epoch < batches.len() {
                continue;
            }
            let (updated, lr, grad_norm) = update(
                model,
                &mut opt,
                &mut acc,
                config,
                resolved,
                state.step,
                &|path| lr_scale[group_of(&groups, path)],
            );
            model = updated;
            state.step += 1;
            let micro_batches = if micro_in_step == 0 {
                config.grad_accum
            } else {
                micro_in_step
            };
            let line = StepLine {
                step: state.step,
                epoch: epoch as f64 + state.batch_in_epoch as f64 / batches.len() as f64,
                loss: step_loss / micro_batches as f64,
                lr,
                grad_norm,
                samples_per_s: step_samples as f64 / step_started.elapsed().as_secs_f64().max(1e-9),
            };
            metrics_log.write(&line)?;
            obs.step(&line, epoch + 1, resolved.epochs, resolved.total_steps);
            step_started = Instant::now();
            (step_samples, step_loss) = (0, 0.0);

            let end_of_epoch = state.batch_in_epoch == batches.len();
            if state.budget_reached.is_none() {
                state.budget_reached = budget_reached(config, &started, &meter);
            }
            let out_of_budget = state.budget_reached.is_some();
            let last_step = state.step == resolved.total_steps;
            let eval_now = out_of_budget
                || end_of_epoch
                || last_step
                || config
                    .eval_every
                    .is_some_and(|k| state.step.is_multiple_of(k));
            if eval_now {
                phases.train += lap(&mut phase);
                let cached = active.as_mut().map(|c| {
                    c.use_.val_passes += 1;
                    (&c.val, frozen)
                });
                flops.eval += eval_flops(
                    &model.body,
                    &task,
                    &val_lengths,
                    config.batch_size,
                    if cached.is_some() { frozen } else { 0 },
                );
                let outputs = predict(&model, &task, &val, config.batch_size, cached, &device);
                let m = task.metrics(&val, &outputs);
                obs.line(&format!(
                    "step {} (epoch {}): validation {}",
                    state.step,
                    epoch + 1,
                    T::describe(&m)
                ));
                phases.eval += lap(&mut phase);
                metrics_log.write(&serde_json::json!({
                    "step": state.step,
                    "epoch": line.epoch,
                    "eval": m,
                    "elapsed": {
                        "seconds": started.elapsed().as_secs_f64(),
                        "energy_wh": meter.snapshot().total_kwh * 1000.0,
                    },
                }))?;
                let (score, loss) = (T::score(&m, config.metric), T::loss_of(&m));
                let standing = state.compare(score, loss);
                if standing != Standing::Worse {
                    state.best_score = Some(score);
                    state.best_loss = Some(loss);
                    state.best_step = Some(state.step);
                    state.best_epoch = Some(line.epoch);
                    // Written with the next checkpoint, so best/ always
                    // matches the state a resume starts from.
                    best_pending = Some((store.tensors(&model), m.clone()));
                    best_text = Some(T::describe(&m));
                }
                if standing == Standing::Better {
                    state.evals_since_best = 0;
                } else {
                    state.evals_since_best += 1;
                    if config.patience.is_some_and(|p| state.evals_since_best >= p) {
                        obs.line(&format!(
                            "early stopping: no better {:?} in {} validations",
                            config.metric, state.evals_since_best
                        ));
                        state.stopped_early = true;
                    }
                }
            }
            if end_of_epoch {
                state.epoch += 1;
                state.batch_in_epoch = 0;
            }
            // Epoch ends checkpoint unless the last checkpoint is recent:
            // epochs trained from a feature cache take well under a second.
            let ckpt_now = (end_of_epoch
                && last_checkpoint_at.elapsed().as_secs_f64() >= EPOCH_CHECKPOINT_INTERVAL_S)
                || out_of_budget
                || state.stopped_early
                || last_step
                || config
                    .checkpoint_every
                    .is_some_and(|k| state.step.is_multiple_of(k));
            if ckpt_now {
                phases.train += lap(&mut phase);
                if let Some((tensors, m)) = best_pending.take() {
                    store.write(&tensors, &run_dir.join("best"))?;
                    write_json_atomic(&run_dir.join("best").join("metrics.json"), &m)?;
                }
                save_checkpoint(&run_dir, &store, &model, &opt, &mut state)?;
                last_checkpoint_at = Instant::now();
                phases.checkpoint += lap(&mut phase);
            }
            obs.step_done(state.step);
            if let Some(why) = &state.budget_reached
                && out_of_budget
            {
                obs.line(&format!(
                    "budget reached: {why}; stopping at step {}",
                    state.step
                ));
                break 'epochs;
            }
            if state.stopped_early || state.step >= resolved.total_steps {
                break 'epochs;
            }
            if end_of_epoch {
                break;
            }
        }
    }
    phases.train += lap(&mut phase);
    if let Some((tensors, m)) = best_pending.take() {
        store.write(&tensors, &run_dir.join("best"))?;
        write_json_atomic(&run_dir.join("best").join("metrics.json"), &m)?;
        phases.checkpoint += lap(&mut phase);
    }
    caches.extend(active.take().map(|c| c.use_));
    if best_text.is_none() && run_dir.join("best").join("metrics.json").exists() {
        let m: T::Metrics = read_json(&run_dir.join("best").join("metrics.json"))?;
        best_text = Some(T::describe(&m));
    }

    // export
    let export_dir = run_dir.join("model");
    let best_dir = run_dir.join("best");
    let metric = format!("{:?}", config.metric).to_lowercase();
    let exported = match (config.export, state.best_step) {
        (ExportChoice::Best, Some(step)) if best_dir.join("model.safetensors").exists() => {
            model = load_weights(
                with_adapters(blank::<A, T>(&task, model_dir, &device)?, config)?,
                &best_dir,
            )?;
            format!(
                "the best validation {metric} (step {step}, epoch {:.2}; ties go to the lower \
                 loss, then the later step)",
                state.best_epoch.unwrap_or(0.0)
            )
        }
        _ => format!(
            "the weights after the last step (step {}, epoch {:.2}){}",
            state.step,
            state.epoch as f64 + state.batch_in_epoch as f64 / micro_per_epoch.max(1) as f64,
            match state.best_step {
                Some(s) if config.export == ExportChoice::Last => format!(
                    "; the best validation {metric} was at step {s}, kept in {} (--export best exports it)",
                    best_dir.display()
                ),
                _ => String::new(),
            }
        ),
    };
    match &lora {
        Some(l) => {
            super::export::export_adapter(&model, &task, l, &run_dir.join("adapter"), config)?;
            let merged = model.clone().merge_lora();
            super::export::export(&merged, &task, model_dir, &export_dir, config)?;
        }
        None => super::export::export(&model, &task, model_dir, &export_dir, config)?,
    }
    obs.line(&format!("exported {exported}"));
    phases.export += lap(&mut phase);
    let seconds = started.elapsed().as_secs_f64();
    let saved: f64 = caches.iter().map(CacheUse::seconds_saved).sum();
    let cost = RunCost::new(
        &config.cost,
        seconds,
        phases,
        flops,
        config.cost.peak(&device)?,
        meter.stop(),
        saved,
    )?;
    cost.save(&run_dir, &config.cost)?;
    for line in cost.summary_lines() {
        obs.line(&line);
    }
    obs.line(&format!(
        "done in {seconds:.1} s; model in {}, metrics in {}, cost in {}",
        export_dir.display(),
        run_dir.join("metrics.jsonl").display(),
        run_dir.join("cost.json").display()
    ));
    Ok(TrainOutcome {
        run_dir,
        model_dir: export_dir,
        best: best_text.zip(state.best_step),
        exported,
        state,
        seconds,
        caches,
        cost,
    })
}

/// What makes one micro-batch's step deterministic.
pub struct Micro {
    /// Seeds the device's generator (dropout masks): a function of the run's
    /// seed and the micro-batch's place, so a resumed run draws the masks the
    /// uninterrupted one would have.
    pub seed: u64,
    /// Groups below this run outside autodiff (or come from `cached`).
    pub frozen: usize,
    pub grad_accum: usize,
}

/// Forward and backward of the examples `chunk` of `split`; the gradients
/// (divided by `grad_accum`) are added to `acc`. Returns the batch's loss.
#[allow(clippy::too_many_arguments)]
pub fn micro_step<A: Architecture, T: Task>(
    model: &TaskModel<A, T::Head>,
    task: &T,
    split: &T::Split,
    chunk: &[usize],
    cached: Option<&Features>,
    micro: &Micro,
    device: &Device,
    acc: &mut GradAccumulator,
) -> f64 {
    device.seed(micro.seed);
    crate::kernels::dropout::seed(micro.seed);
    let features = match cached {
        Some(f) => model.features_from(f.batch(chunk, device), micro.frozen),
        None => model.features(task.input(split, chunk, device), micro.frozen),
    };
    let targets = task.targets(split, chunk, device);
    let loss = task.loss(&model.head, features, targets);
    let value = host(&loss).1[0] as f64;
    let mut grads = (loss / micro.grad_accum as f64).backward();
    acc.add(model, &mut grads);
    value
}

/// One optimizer update from the accumulated gradients: clipped to the
/// global norm `config.clip_norm`, at the scheduled rate of `step` times
/// each parameter's group scale. Returns the model, the rate and the norm.
pub fn update<M: crate::models::Head>(
    model: M,
    opt: &mut AdamW,
    acc: &mut GradAccumulator,
    config: &TrainConfig,
    resolved: &Resolved,
    step: usize,
    scale_of: &dyn Fn(&str) -> f64,
) -> (M, f64, f64) {
    let grad_norm = acc.global_norm();
    let clip = if config.clip_norm > 0.0 && grad_norm > config.clip_norm {
        config.clip_norm / (grad_norm + 1e-6)
    } else {
        1.0
    };
    let factor = schedule(
        step,
        resolved.warmup_steps,
        resolved.total_steps,
        config.schedule,
    );
    let lr = resolved.lr * factor;
    let model = opt.step(model, acc, &|path| lr * scale_of(path), clip);
    (model, lr, grad_norm)
}

/// Which budget, if any, the run has used up.
fn budget_reached(
    config: &TrainConfig,
    started: &Instant,
    meter: &crate::cost::energy::EnergyMeter,
) -> Option<String> {
    let secs = started.elapsed().as_secs_f64();
    if let Some(max) = config.max_seconds
        && secs >= max
    {
        return Some(format!("{secs:.0} s of --max-seconds {max}"));
    }
    if let Some(max) = config.max_wh {
        let wh = meter.snapshot().total_kwh * 1000.0;
        if wh >= max {
            return Some(format!("{wh:.2} Wh of --max-wh {max}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bert::{Bert, BertConfig};
    use crate::strategy::Strategy;
    use crate::tasks::classification::{LabelMap, TextClassification, TextSplit};
    use crate::tokenize::Encoded;

    /// A tiny BERT classifier from scratch (no dropout: gradients are
    /// deterministic) on the autodiff device, with 16 short examples.
    fn setup() -> (
        TaskModel<Bert, crate::tasks::classification::ClassificationHead>,
        TextClassification,
        TextSplit,
        Device,
    ) {
        let config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2,
                "num_attention_heads": 4, "intermediate_size": 32,
                "max_position_embeddings": 16, "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0}"#,
        )
        .unwrap();
        let device = Device::default().autodiff();
        let task = TextClassification {
            labels: LabelMap {
                labels: vec!["a".into(), "b".into()],
            },
            pad_id: 0,
        };
        let body = Bert::new(&config, &device).unwrap();
        let head = task.new_head(&body, &device);
        let (model, _) = state::load(TaskModel { body, head }, Source::Scratch, 3).unwrap();
        let items = (0..16)
            .map(|i| {
                let ids: Vec<u32> = (0..3 + i % 5)
                    .map(|j| 1 + ((i * 7 + j * 3) % 39) as u32)
                    .collect();
                Encoded {
                    type_ids: vec![0; ids.len()],
                    ids,
                }
            })
            .collect();
        let split = TextSplit {
            items,
            labels: (0..16).map(|i| (i * 5 / 3) % 2).collect(),
        };
        (model, task, split, device)
    }

    fn grads(acc: &GradAccumulator) -> Vec<(String, Vec<f32>)> {
        acc.grads
            .iter()
            .map(|(k, g)| (k.clone(), host(g).1))
            .collect()
    }

    /// Gradients of the examples `all`, in `micro_batches` accumulated micro-batches.
    fn accumulate(
        model: &TaskModel<Bert, crate::tasks::classification::ClassificationHead>,
        task: &TextClassification,
        split: &TextSplit,
        all: &[usize],
        micro_batches: usize,
        device: &Device,
    ) -> GradAccumulator {
        let micro = Micro {
            seed: 1,
            frozen: 0,
            grad_accum: micro_batches,
        };
        let mut acc = GradAccumulator::default();
        for chunk in all.chunks(all.len() / micro_batches) {
            micro_step(model, task, split, chunk, None, &micro, device, &mut acc);
        }
        acc
    }

    #[test]
    fn two_accumulated_batches_of_8_equal_one_batch_of_16() {
        let (model, task, split, device) = setup();
        let all: Vec<usize> = (0..16).collect();
        let one = accumulate(&model, &task, &split, &all, 1, &device);
        let two = accumulate(&model, &task, &split, &all, 2, &device);
        let (a, b) = (grads(&one), grads(&two));
        assert_eq!(a.len(), b.len());
        assert!(a.len() > 30, "every parameter has a gradient");
        let mut worst = 0f32;
        for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
            assert_eq!(ka, kb);
            for (x, y) in va.iter().zip(vb) {
                worst = worst.max((x - y).abs());
            }
        }
        assert!(worst < 1e-5, "accumulated gradients differ by {worst}");
        assert!((one.global_norm() - two.global_norm()).abs() < 1e-5);
    }

    #[test]
    fn clipping_scales_the_gradients_to_the_norm() {
        let (model, task, split, device) = setup();
        let all: Vec<usize> = (0..16).collect();
        let mut acc = accumulate(&model, &task, &split, &all, 1, &device);
        let before = grads(&acc);
        let norm = acc.global_norm();
        let config = TrainConfig {
            clip_norm: norm / 4.0,
            lr: Some(1e-3),
            ..TrainConfig::default()
        };
        let resolved = Resolved::new(&config, 16);
        let mut opt = AdamW::new(AdamWConfig::default());
        let (_, lr, reported) = update(model, &mut opt, &mut acc, &config, &resolved, 0, &|_| 1.0);
        assert!(
            (reported - norm).abs() < 1e-9,
            "the norm before clipping is reported"
        );
        assert!(lr > 0.0);
        // Adam's first moment after one step is (1 - beta1) x the gradient it was given.
        let scale = config.clip_norm / (norm + 1e-6);
        for (k, g) in &before {
            let (_, m) = host(&opt.states[k].m);
            for (mi, gi) in m.iter().zip(g) {
                let want = 0.1 * gi * scale as f32;
                assert!(
                    (mi - want).abs() <= 1e-6 * (1.0 + want.abs()),
                    "{k}: {mi} vs {want}"
                );
            }
        }
    }

    #[test]
    fn layerwise_decay_gives_each_group_its_rate() {
        let (model, task, split, device) = setup();
        let groups = model.body.groups();
        let n = groups.len();
        let strategy = Strategy::LrDecay(0.5);
        let scale = strategy.lr_scale(n);
        let all: Vec<usize> = (0..16).collect();
        let mut acc = accumulate(&model, &task, &split, &all, 1, &device);
        let config = TrainConfig {
            strategy,
            lr: Some(1e-2),
            warmup_ratio: Some(0.0),
            clip_norm: 0.0,
            ..TrainConfig::default()
        };
        let resolved = Resolved::new(&config, 16);
        let before = state::export(&model, &|_| true);
        let mut opt = AdamW::new(AdamWConfig::default());
        let (after, lr, _) = update(model, &mut opt, &mut acc, &config, &resolved, 0, &|p| {
            scale[group_of(&groups, p)]
        });
        assert_eq!(lr, 1e-2);
        // Adam's first step moves an undecayed parameter by lr x sign(gradient):
        // the LayerNorm biases show each group's rate.
        let after = state::export(&after, &|_| true);
        for (group, key) in [
            (0, "bert.embeddings.LayerNorm.bias"),
            (1, "bert.encoder.layer.0.output.LayerNorm.bias"),
            (2, "bert.encoder.layer.1.output.LayerNorm.bias"),
            (3, "bert.pooler.dense.bias"),
        ] {
            let b = &before.iter().find(|t| t.0 == key).unwrap().2;
            let a = &after.iter().find(|t| t.0 == key).unwrap().2;
            let step = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max) as f64;
            let want = 1e-2 * 0.5f64.powi((n - 1 - group) as i32);
            assert!(
                (step - want).abs() < 1e-3 * want,
                "{key}: moved {step}, want {want}"
            );
        }
    }
}
