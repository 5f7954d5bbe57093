//! `--task captioning`: reads the caption tables, tokenises the captions
//! with the language model's tokenizer, decodes the images, builds the
//! [`Captioning`] task for the pair of families (image encoder, causal
//! language model) and hands it to the fit loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;

use super::fit::TrainOutcome;
use super::progress::Observer;
use super::{Resolved, Run, RunConfig, TrainConfig, family_of, resolve_model, restored_state};
use crate::data::captions::{self, CaptionedImage};
use crate::data::preprocess::Augment;
use crate::data::split::epoch_order;
use crate::data::table::Example;
use crate::models::causal::{CAUSAL_FAMILIES, CausalLm};
use crate::models::encoder_decoder::layout;
use crate::models::vision;
use crate::models::{Architecture, Positions};
use crate::strategy::Strategy;
use crate::tasks::Task;
use crate::tasks::captioning::{
    CaptionCore, CaptionSplit, CaptionTaskState, Captioning, DECODER_DIR, DecoderPart, MapperKind,
    agreed_labels, check_parts, cross_attention_flops, grid_cells, mapper_flops,
};
use crate::tasks::image::load_split;

/// The language model's directory: `--decoder` resolved as `--model` is.
pub fn decoder_dir(config: &TrainConfig) -> Result<PathBuf> {
    let spec = config.captioning.decoder.as_deref().context(
        "--decoder is required for --task captioning: the causal language model that writes the \
         captions (smollm2, or a GPT-2/Llama directory, hub id or GGUF file)",
    )?;
    let dir = resolve_model(spec)?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Picks the encoder's and the language model's families and runs.
pub(super) fn captioning(
    config: &TrainConfig,
    model_dir: &Path,
    resumed: Option<(RunConfig, PathBuf)>,
    device: &Device,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    // a VisionEncoderDecoderModel is both parts: converted once into a
    // captioner (the ViT, the projection, the GPT-2) that trains from it
    let converted;
    let mut adjusted;
    let (model_dir, config) = if resumed.is_none() && layout::is_encoder_decoder(model_dir) {
        if let Some(d) = &config.captioning.decoder {
            bail!(
                "{} is a vision-encoder-decoder, which holds its own language model: leave \
                 out --decoder {d}",
                model_dir.display()
            );
        }
        converted = layout::converted_captioner(model_dir, &mut |l| obs.line(l))?;
        adjusted = config.clone();
        adjusted.captioning.decoder = Some(converted.join(DECODER_DIR).display().to_string());
        adjusted.captioning.mapper = MapperKind::CrossAttention;
        (converted.as_path(), &adjusted)
    } else {
        (model_dir, config)
    };
    let encoder = family_of(model_dir, config.arch.as_deref())?;
    if !vision::is_image_family(&encoder) {
        bail!(
            "--encoder {} is a `{encoder}` model; captioning needs an image family ({})",
            model_dir.display(),
            vision::IMAGE_FAMILIES.join(", ")
        );
    }
    let dec_dir = match &resumed {
        Some((rc, _)) => {
            let state: CaptionTaskState = serde_json::from_value(rc.task_state.clone())
                .context("the run's config.json has no captioning state")?;
            state.decoder.dir
        }
        None => decoder_dir(config)?,
    };
    let decoder = family_of(&dec_dir, None)?;
    crate::with_image_family!(encoder.as_str(), E => crate::with_causal_family!(decoder.as_str(), D => run::<E, D>(config, model_dir, &dec_dir, resumed, device, started, obs), else bail!(
        "--decoder {} is a `{decoder}` model; captioning needs a causal language model ({})",
        dec_dir.display(),
        CAUSAL_FAMILIES.join(", ")
    )), else unreachable!("{encoder} is an image family"))
}

/// The mapper and what it reads, for the log: `mlp`, `transformer (2
/// layers)`, with ` on a 3x3 grid` where the features are a grid.
fn describe_mapper(s: &CaptionTaskState) -> String {
    if s.mapper == MapperKind::CrossAttention {
        let mut out = "cross-attention".to_string();
        if s.feature_grid > 0 {
            out += &format!(" to a {0}x{0} grid", s.feature_grid);
        }
        return out;
    }
    let mut out = format!("{:?}", s.mapper).to_lowercase();
    if s.mapper == MapperKind::Transformer {
        let n = s.mapper_layers;
        out += &format!(" ({n} layer{})", if n == 1 { "" } else { "s" });
    }
    if s.feature_grid > 0 {
        out += &format!(" on a {0}x{0} grid", s.feature_grid);
    }
    out
}

/// Decoder strategies captioning takes.
fn check_decoder_strategy(s: Strategy, groups: usize) -> Result<()> {
    match s {
        Strategy::Gradual | Strategy::LrDecay(_) => bail!(
            "--decoder-strategy {s}: the language model takes scratch, full, freeze:N, frozen \
             or lora[:R]"
        ),
        _ => s.check(groups),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<E: Architecture, D: CausalLm>(
    config: &TrainConfig,
    model_dir: &Path,
    dec_dir: &Path,
    resumed: Option<(RunConfig, PathBuf)>,
    device: &Device,
    started: Instant,
    obs: &mut dyn Observer,
) -> Result<TrainOutcome> {
    let c = &config.captioning;
    let resumed_run = resumed.is_some();
    let train_device = device.clone().autodiff();
    let body = E::from_config_file(&model_dir.join("config.json"), &train_device)?;
    config.strategy.check(body.groups().len())?;
    let cross = c.mapper == MapperKind::CrossAttention;
    let dec_config = dec_dir.join("config.json");
    let decoder = if cross {
        D::with_cross_attention(&dec_config, device)?
    } else {
        D::from_config_file(&dec_config, device)?
    };
    check_decoder_strategy(c.decoder_strategy, decoder.groups().len())?;
    check_parts(
        c.mapper,
        c.prefix_length,
        body.feature_size(),
        decoder.hidden_size(),
        (c.feature_grid, body.feature_grid()),
        c.mapper_layers,
    )?;
    c.decoding.check()?;

    // the data
    let train_path = config.train.as_ref().context(
        "--train is required: a CSV/TSV/JSONL table with an image column and a caption column",
    )?;
    let read = |p: &Path| {
        captions::read(
            p,
            &config.image_column,
            &c.caption_column,
            config.skip_bad_rows,
        )
    };
    let train_set = read(train_path)?;
    let mut skipped = train_set.skipped;
    // --train-limit draws its images first; without --val a share of
    // them validates (so a small run validates on a few images, not on a
    // share of the whole table)
    let mut pool = train_set.images;
    if let Some(limit) = config.train_limit
        && limit < pool.len()
    {
        let order = epoch_order(pool.len(), config.seed ^ 0x4C49_4D49, 0);
        let mut keep: Vec<usize> = order[..limit].to_vec();
        keep.sort_unstable();
        pool = keep.iter().map(|&i| pool[i].clone()).collect();
    }
    let (train_images, val_images) = match &config.val {
        Some(p) => {
            let v = read(p)?;
            skipped += v.skipped;
            (pool, v.images)
        }
        None => hold_out(pool, config.val_fraction, config.seed)?,
    };
    let data_sha256 = super::tables_sha256(config, train_path)?;

    // the task
    let tokenizer = crate::tokenize::lm_tokenizer(dec_dir)?;
    let state: CaptionTaskState = match restored_state(&resumed, &data_sha256, "captioning state")?
    {
        Some(s) => s,
        None => {
            let eos = decoder.eos_token_ids();
            if eos.is_empty() {
                bail!(
                    "{} names no eos_token_id: a caption needs an end",
                    dec_dir.join("config.json").display()
                );
            }
            let mut start: Vec<u32> = tokenizer
                .encode("", true)
                .map_err(|e| anyhow::anyhow!("{}: {e}", dec_dir.display()))?
                .get_ids()
                .iter()
                .copied()
                .filter(|t| !eos.contains(t))
                .collect();
            if cross && start.is_empty() {
                // a cross-attending decoder starts from a token (transformers'
                // decoder_start_token_id: GPT-2's BOS, which is also its EOS)
                start.push(bos_token(&dec_config)?.unwrap_or(eos[0]));
            }
            let lora = match c.decoder_strategy {
                Strategy::Lora(r) => {
                    let mut l = config.lora_config(r);
                    l.targets =
                        l.resolve_targets(D::MODEL_TYPE, D::LORA_TARGETS, D::LORA_DEFAULT_TARGETS)?;
                    Some(l)
                }
                _ => None,
            };
            CaptionTaskState {
                recipe: E::recipe(model_dir, config.image_size)?,
                decoder: DecoderPart {
                    model_type: D::MODEL_TYPE.to_string(),
                    dir: dec_dir.to_path_buf(),
                    strategy: c.decoder_strategy,
                    lora,
                },
                mapper: c.mapper,
                prefix_length: if cross { 0 } else { c.prefix_length },
                mapper_hidden: if cross {
                    0
                } else {
                    (c.prefix_length * decoder.hidden_size()).div_ceil(2)
                },
                mapper_layers: c.mapper_layers,
                feature_grid: c.feature_grid,
                start,
                eos,
                max_new_tokens: 0,
                decoding: c.decoding,
            }
        }
    };
    state.recipe.check()?;
    let mut core = CaptionCore::new(state, tokenizer, config.seed);
    let (train_file, val_file) = super::file_names(config);
    let context = decoder.max_positions();
    let (train, bad_train) = load_caption_split(
        &core,
        &train_images,
        &train_file,
        config.augment,
        config.skip_bad_rows,
        context,
    )?;
    let (val, bad_val) = load_caption_split(
        &core,
        &val_images,
        &val_file,
        Augment::None,
        config.skip_bad_rows,
        context,
    )?;
    skipped += bad_train + bad_val;
    if train.is_empty() || val.is_empty() {
        bail!("no decodable training or validation images left");
    }
    let longest = train
        .tokens
        .iter()
        .flatten()
        .map(Vec::len)
        .max()
        .unwrap_or(0);
    if core.state.max_new_tokens == 0 {
        let room = context - core.state.prefix_length - core.state.start.len();
        core.state.max_new_tokens = c
            .max_new_tokens
            .unwrap_or(longest - core.state.start.len() + 8)
            .min(room);
    }
    let mean_captions = train.captions() as f64 / train.len() as f64;
    let mean_tokens =
        train.tokens.iter().flatten().map(Vec::len).sum::<usize>() as f64 / train.captions() as f64;
    let seq = core.state.prefix_length + mean_tokens.round() as usize;
    let mut decoder_flops = mean_captions * decoder.group_flops(1, seq).iter().sum::<f64>();
    let mapper_flops = mapper_flops(&core.state, body.feature_size(), decoder.hidden_size());
    let mut task = Captioning::<D>::new(core, (mapper_flops, decoder_flops));
    // a converted encoder-decoder's projection starts from its weights
    if cross && !resumed_run {
        let weights = model_dir.join("model.safetensors");
        if crate::hub::Checkpoint::open(&weights)
            .map(|c| c.tensors.contains_key("mapping.0.weight"))
            .unwrap_or(false)
        {
            task.pretrained_mapping = Some(weights);
        }
    }
    let body = task.adapt_body(body);
    if cross {
        let memory = match body.reads_after(body.groups().len()) {
            Positions::Sequence { len } => len,
            _ => grid_cells(task.core.state.feature_grid),
        };
        decoder_flops += cross_attention_flops(
            decoder.num_layers(),
            decoder.hidden_size(),
            memory,
            mean_captions,
            seq,
        );
        task.flops_per_image.1 = decoder_flops;
    }

    // a learning rate for the pair, unless given: the mapper starts from
    // nothing and wants large steps; a language model tuned in full small ones
    let mut config = config.clone();
    if config.lr.is_none() {
        config.lr = Some(match c.decoder_strategy {
            Strategy::Head | Strategy::Lora(_) => 1e-3,
            Strategy::Scratch => 3e-4,
            _ => 1e-4,
        });
    }
    let config = &config;
    let s = &task.core.state;
    let resolved = Resolved::new(config, train.len());
    let conditioning = if cross {
        "reading the image by cross-attention".to_string()
    } else {
        format!("prefix of {} positions", s.prefix_length)
    };
    let line = format!(
        "encoder {} ({}) + {} mapper + language model {} ({}), {conditioning}, on {} \
         training / {} validation images ({} / {} captions, at most {} tokens); {} epochs, {} \
         steps, lr {:.1e}, warmup {} steps; decoding {}; images: {}{}",
        E::MODEL_TYPE,
        config.strategy,
        describe_mapper(s),
        D::MODEL_TYPE,
        s.decoder.strategy,
        train.len(),
        val.len(),
        train.captions(),
        val.captions(),
        longest,
        resolved.epochs,
        resolved.total_steps,
        resolved.lr,
        resolved.warmup_steps,
        if s.decoding.beams > 1 {
            format!("{} beams", s.decoding.beams)
        } else {
            "greedy".into()
        },
        s.recipe.describe(),
        if skipped > 0 {
            format!("; {skipped} bad rows or images skipped")
        } else {
            String::new()
        }
    );
    let run = Run {
        config,
        model_dir,
        resumed,
        task_state: serde_json::to_value(&task.core.state)?,
        data_sha256,
        skipped,
        device,
        started,
    };
    run.fit(body, task, train, val, &line, obs)
}

/// `config.json`'s `bos_token_id` at `path` (`None` when it names none).
fn bos_token(path: &Path) -> Result<Option<u32>> {
    let raw: serde_json::Value = super::checkpoint::read_json(path)?;
    Ok(raw
        .get("bos_token_id")
        .and_then(serde_json::Value::as_u64)
        .map(|t| t as u32))
}

/// A seeded share `fraction` of `images` (at least one, never all) held out
/// for validation; returns (training, validation).
fn hold_out(
    images: Vec<CaptionedImage>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<CaptionedImage>, Vec<CaptionedImage>)> {
    if images.len() < 2 {
        bail!(
            "{} captioned image(s): too few to hold some out for validation; give --val",
            images.len()
        );
    }
    let n_val = ((images.len() as f64 * fraction).ceil() as usize).clamp(1, images.len() - 1);
    let order = epoch_order(images.len(), seed ^ 0x5641_4C21, 0);
    let mut is_val = vec![false; images.len()];
    for &i in &order[..n_val] {
        is_val[i] = true;
    }
    let (val, train): (Vec<_>, Vec<_>) = images.into_iter().zip(is_val).partition(|(_, v)| *v);
    Ok((
        train.into_iter().map(|(i, _)| i).collect(),
        val.into_iter().map(|(i, _)| i).collect(),
    ))
}

/// Decodes and tokenises `images` (their captions checked against the
/// language model's `context`): the split, and images skipped.
pub fn load_caption_split(
    core: &CaptionCore,
    images: &[CaptionedImage],
    file: &str,
    augment: Augment,
    skip_bad: bool,
    context: usize,
) -> Result<(CaptionSplit, usize)> {
    let s = &core.state;
    let mut tokens = Vec::with_capacity(images.len());
    for img in images {
        let mut rows = Vec::with_capacity(img.captions.len());
        for caption in &img.captions {
            let row = core.caption_tokens(caption)?;
            if s.prefix_length + row.len() > context {
                bail!(
                    "{file}: a caption of image {} (first row at line {}) is {} tokens; with \
                     the prefix of {} positions it exceeds the language model's context of \
                     {context} positions: shorten it, or use a shorter --prefix-length",
                    img.path.display(),
                    img.line,
                    row.len(),
                    s.prefix_length
                );
            }
            rows.push(row);
        }
        tokens.push(rows);
    }
    let examples: Vec<Example> = images
        .iter()
        .map(|i| Example {
            text: i.path.display().to_string(),
            label: core.image.labels.labels[0].clone(),
            line: i.line,
        })
        .collect();
    let (split, skipped) = load_split(&core.image, &examples, file, augment, skip_bad)?;
    // images that did not decode were skipped: keep the captions of the rest
    let mut kept_tokens = Vec::with_capacity(split.len());
    let mut references = Vec::with_capacity(split.len());
    let mut next = 0;
    for f in &split.files {
        while images[next].path.display().to_string() != f.display().to_string() {
            next += 1;
        }
        kept_tokens.push(std::mem::take(&mut tokens[next]));
        references.push(images[next].captions.clone());
        next += 1;
    }
    let labels = agreed_labels(&references);
    Ok((
        CaptionSplit {
            images: split,
            tokens: kept_tokens,
            references,
            labels,
        },
        skipped,
    ))
}
