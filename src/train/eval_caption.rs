//! A trained captioner for `eval` and `predict`: an exported run's
//! `model/` (`config.json` with the image family's config and the
//! `captioning` state, `model.safetensors` with the encoder and the mapper,
//! `decoder/` with the language model as a Hugging Face causal-LM
//! directory and its tokenizer).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;

use super::checkpoint::read_json;
use super::eval::{Spent, costed_eval, exported_model, predict};
use crate::cost::run::{CostOptions, Phases, RunCost};
use crate::data::captions::{CaptionSet, CaptionedImage};
use crate::data::preprocess::Augment;
use crate::hub::Checkpoint;
use crate::models::causal::CausalLm;
use crate::models::encoder_decoder::layout;
use crate::models::state::{self, Source};
use crate::models::{Architecture, Positions, TaskModel};
use crate::tasks::Task;
use crate::tasks::captioning::{
    CONFIG_FIELD, CaptionCore, CaptionMetrics, CaptionSplit, CaptionTaskState, Captioning,
    MapperKind, PrefixHead, cross_attention_flops, grid_cells, mapper_flops,
};
use crate::tasks::causal_lm::NoHead;

/// Outputs of a split, and the metrics with what testing cost.
type RunFn = Box<dyn Fn(&CaptionSplit, usize, &Device) -> Vec<Vec<f32>>>;
type EvalFn =
    Box<dyn Fn(&CaptionSplit, usize, &Device, Spent<'_>) -> Result<(CaptionMetrics, RunCost)>>;

/// A loaded captioner.
pub struct Captioner {
    run: RunFn,
    eval: EvalFn,
    pub core: CaptionCore,
    /// Positions the language model takes.
    pub context: usize,
    pub dir: PathBuf,
}

/// Whether `model` (a run or an exported directory) is a captioner, or a
/// transformers `VisionEncoderDecoderModel` (which captions as one).
pub fn is_captioner(model: &Path) -> bool {
    let dir = exported_model(model);
    read_json::<serde_json::Value>(&dir.join("config.json"))
        .map(|v| v.get(CONFIG_FIELD).is_some())
        .unwrap_or(false)
        || layout::is_encoder_decoder(&dir)
}

/// Decoding settings `eval` and `predict` take for a captioner, over
/// those it was trained with.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DecodingOverride {
    /// Captioners: beams of beam search (1: greedy).
    #[arg(long)]
    pub beams: Option<usize>,
    /// Captioners, beam search: finished captions rank by score / length^F.
    #[arg(long)]
    pub length_penalty: Option<f64>,
    /// Captioners, beam search: no n-gram of this size occurs twice.
    #[arg(long)]
    pub no_repeat_ngram: Option<usize>,
    /// Captioners: longest caption generated, in tokens.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
}

impl DecodingOverride {
    /// `state` with the settings given here.
    fn apply(&self, state: &mut CaptionTaskState) -> Result<()> {
        let d = &mut state.decoding;
        d.beams = self.beams.unwrap_or(d.beams);
        d.length_penalty = self.length_penalty.unwrap_or(d.length_penalty);
        d.no_repeat_ngram = self.no_repeat_ngram.unwrap_or(d.no_repeat_ngram);
        d.check()?;
        state.max_new_tokens = self.max_new_tokens.unwrap_or(state.max_new_tokens);
        Ok(())
    }
}

/// Loads the captioner at `model`, decoding as `decoding` says.
pub fn load_captioner(
    model: &Path,
    decoding: &DecodingOverride,
    device: &Device,
) -> Result<Captioner> {
    let mut dir = exported_model(model);
    // a VisionEncoderDecoderModel, converted once into a captioner
    if layout::is_encoder_decoder(&dir) {
        dir = layout::converted_captioner(&dir, &mut |l| eprintln!("{l}"))?;
    }
    let config_path = dir.join("config.json");
    let raw: serde_json::Value = read_json(&config_path)?;
    let mut state: CaptionTaskState = serde_json::from_value(
        raw.get(CONFIG_FIELD)
            .cloned()
            .with_context(|| format!("{} is not a captioner's config", config_path.display()))?,
    )
    .with_context(|| {
        format!(
            "{}: `{CONFIG_FIELD}` is not a captioner's state",
            config_path.display()
        )
    })?;
    state.decoder.dir = dir.join(&state.decoder.dir);
    decoding.apply(&mut state)?;
    let encoder = raw
        .get("model_type")
        .and_then(|m| m.as_str())
        .with_context(|| format!("{} names no model_type", config_path.display()))?
        .to_string();
    let decoder = state.decoder.model_type.clone();
    crate::with_image_family!(encoder.as_str(), E => crate::with_causal_family!(decoder.as_str(), D => load_as::<E, D>(dir, state, device), else bail!(
        "{}: the language model is a `{decoder}`, which this build does not implement",
        config_path.display()
    )), else bail!(
        "{}: the encoder is a `{encoder}`, not an image family this build implements",
        config_path.display()
    ))
}

fn load_as<E: Architecture + 'static, D: CausalLm + 'static>(
    dir: PathBuf,
    state: CaptionTaskState,
    device: &Device,
) -> Result<Captioner> {
    let tokenizer = crate::tokenize::lm_tokenizer(&state.decoder.dir)?;
    let core = CaptionCore::new(state, tokenizer, 0);
    let mut task = Captioning::<D>::new(core.clone(), (0.0, 0.0));
    let body = task.adapt_body(E::from_config_file(&dir.join("config.json"), device)?);
    let head = task.new_head(&body, device);
    // the cost account: the mapper, and the language model over the prefix
    // and a caption of the longest length generated
    let s = &core.state;
    let seq = s.prefix_length + s.start.len() + s.max_new_tokens;
    let mut decoder_flops: f64 = head.decoder.group_flops(1, seq).iter().sum();
    if s.mapper == MapperKind::CrossAttention {
        let memory = match body.reads_after(body.groups().len()) {
            Positions::Sequence { len } => len,
            _ => grid_cells(s.feature_grid),
        };
        let d = &head.decoder;
        decoder_flops += cross_attention_flops(d.num_layers(), d.hidden_size(), memory, 1.0, seq);
    }
    task.flops_per_image = (
        mapper_flops(s, body.feature_size(), head.decoder.hidden_size()),
        decoder_flops,
    );
    let weights = Checkpoint::open(&dir)?;
    let apart = |p: &str| Captioning::<D>::exports_param(p);
    let (model, _) = state::load(
        TaskModel { body, head },
        Source::Overlay(&weights, &apart),
        0,
    )?;
    let TaskModel { body, head } = model;
    let PrefixHead {
        mapping,
        transformer,
        decoder,
    } = head;
    let decoder_dir = &core.state.decoder.dir;
    let decoder_weights = Checkpoint::open(decoder_dir)?;
    let (decoder, _) = state::load(
        TaskModel {
            body: decoder,
            head: NoHead,
        },
        Source::Exact(&decoder_weights),
        0,
    )?;
    let context = decoder.body.max_positions();
    let model = TaskModel {
        body,
        head: PrefixHead {
            mapping,
            transformer,
            decoder: decoder.body,
        },
    }
    .valid();
    let task = std::rc::Rc::new(task);
    let model = std::rc::Rc::new(model);
    let (t2, m2) = (task.clone(), model.clone());
    Ok(Captioner {
        run: Box::new(move |split, batch, device| {
            predict(&model, &*task, split, batch, None, device)
        }),
        eval: Box::new(move |split, batch, device, spent| {
            costed_eval(&m2, &*t2, split, batch, device, spent)
        }),
        core,
        context,
        dir,
    })
}

impl Captioner {
    /// The split of `images` with their captions (none for prediction).
    fn split(
        &self,
        images: &[CaptionedImage],
        file: &str,
        skip_bad: bool,
    ) -> Result<(CaptionSplit, usize)> {
        super::captioning::load_caption_split(
            &self.core,
            images,
            file,
            Augment::None,
            skip_bad,
            self.context,
        )
    }

    /// Captions for image files, in order: `(file, caption)`.
    pub fn predict(
        &self,
        files: &[PathBuf],
        batch_size: usize,
        device: &Device,
    ) -> Result<Vec<(String, String)>> {
        let images: Vec<CaptionedImage> = files
            .iter()
            .map(|f| CaptionedImage {
                path: f.clone(),
                captions: Vec::new(),
                line: 0,
            })
            .collect();
        let (split, _) = self.split(&images, "the images given", false)?;
        let outputs = (self.run)(&split, batch_size, device);
        Ok(files
            .iter()
            .map(|f| f.display().to_string())
            .zip(self.core.captions(&outputs))
            .collect())
    }

    /// BLEU, ROUGE-L, CIDEr-D, label accuracy and caption loss on a caption
    /// table, and what testing cost.
    pub fn evaluate(
        &self,
        set: &CaptionSet,
        file: &str,
        batch_size: usize,
        device: &Device,
        cost: &CostOptions,
    ) -> Result<(CaptionMetrics, RunCost, usize)> {
        let started = Instant::now();
        let meter = cost.start_meter(device)?;
        let (split, skipped) = self.split(&set.images, file, false)?;
        let phases = Phases {
            data: started.elapsed().as_secs_f64(),
            ..Phases::default()
        };
        let (m, c) = (self.eval)(
            &split,
            batch_size,
            device,
            Spent {
                options: cost,
                meter,
                started,
                phases,
            },
        )?;
        Ok((m, c, skipped))
    }
}
