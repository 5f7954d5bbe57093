//! Image captioning (`--task captioning`) by the prefix recipe (ClipCap,
//! LLaVA): an image family's pooled features pass through a trained
//! mapping network that makes `--prefix-length` input embeddings of a
//! causal language model (any causal-LM family); the language model reads
//! them before the caption's tokens and learns to continue them with the
//! caption. The loss is the next-token cross-entropy on the caption's
//! tokens (and the end-of-sequence token after them), averaged over every
//! caption of every image in the batch; captions are generated greedily
//! or by beam search from the prefix; validation reports BLEU-1..4,
//! ROUGE-L and CIDEr-D as the COCO caption evaluation computes them
//! ([`crate::captioning::metrics`]), the caption loss, and, where the
//! references name the same items (the constructed Fashion-MNIST scenes),
//! the share of generated captions that name exactly those items.
//!
//! The image family is the run's body (`--encoder`/`--model`, trained by
//! `--encoder-strategy`/`--strategy`, its frozen prefix read from the
//! feature cache); the mapper and the language model are the task's head
//! ([`PrefixHead`]), the language model trained by `--decoder-strategy`:
//! `scratch`, `full`, `freeze:N`, `frozen` (or `head`: no weight of the
//! language model trains; gradients still flow through it to the mapper)
//! or `lora[:R]` (adapters on the language model's projections).

use crate::kernels::matmul::LinearExt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::tanh;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::causal_lm::NoHead;
use super::classification::LabelMap;
use super::image::{ImageClassification, ImageSplit};
use super::{MetricName, Task};
use crate::captioning::metrics::score;
use crate::data::captions_demo::{named_classes, names_the_labels};
use crate::generate::beam::{BeamSearch, Start, beam_search};
use crate::generate::{Sampling, generate_attending};
use crate::models::causal::{CausalLm, EncoderStates, positions};
use crate::models::lora::{LoraOp, freeze_all_but_adapters, train_also};
use crate::models::params::SeededRng;
use crate::models::state::{self, Source};
use crate::models::{Architecture, Flow, TaskModel};
use crate::strategy::Strategy;
use crate::train::cache::KeyHasher;

pub mod mapper;
pub mod parts;
pub mod settings;
use mapper::TransformerMapper;

pub use parts::{DECODER_DIR, check_parts, write_decoder};
use parts::{is_cross_attention, pretrained_linears, torch_linear};
pub use settings::{CaptionConfig, CaptionTaskState, DecoderPart, Decoding, MapperKind};

/// `--task`'s name for captioning.
pub const NAME: &str = "captioning";

/// `export_config`'s marker of an exported captioner.
pub const CONFIG_FIELD: &str = "captioning";

/// The task's head: the mapping network (see [`MapperKind`]: two layers
/// in `mapping` for `mlp`, `transformer` for `transformer`, neither for
/// `none`, the encoder-to-decoder projection or nothing for
/// `cross-attention`) and the language model.
#[derive(Module, Debug)]
pub struct PrefixHead<D: CausalLm> {
    /// Named `mapping`: burn's derive names its own argument `mapper`.
    pub mapping: Vec<Linear>,
    pub transformer: Option<TransformerMapper>,
    pub decoder: D,
}

/// The image's features as one vector `[batch, features]`: the pooled
/// vector, or every cell of a grid, channel-major (`[c, h, w]` flattened).
fn flattened(features: Flow) -> Tensor<2> {
    match features {
        Flow::Pooled(x) => x,
        Flow::Maps(x) => {
            let [b, c, h, w] = x.dims();
            x.reshape([b, c * h * w])
        }
        _ => panic!("an image family's top group returns pooled features or maps"),
    }
}

/// The image's features as tokens `[batch, cells, channels]`: one per
/// cell of a grid, or the pooled vector as one.
fn tokens(features: Flow) -> Tensor<3> {
    match features {
        Flow::Pooled(x) => x.unsqueeze_dim(1),
        Flow::Hidden { x, .. } => x,
        Flow::Maps(x) => {
            let [b, c, h, w] = x.dims();
            x.reshape([b, c, h * w]).swap_dims(1, 2)
        }
        _ => panic!("an image family's top group returns pooled features or maps"),
    }
}

/// Forward FLOPs per image of the mapper `s` describes, for encoder
/// features of `features` channels and a language model of width
/// `hidden` (products only).
pub fn mapper_flops(s: &CaptionTaskState, features: usize, hidden: usize) -> f64 {
    let cells = grid_cells(s.feature_grid);
    match s.mapper {
        MapperKind::Mlp => {
            2.0 * (features * cells * s.mapper_hidden + s.mapper_hidden * s.prefix_length * hidden)
                as f64
        }
        MapperKind::Transformer => {
            TransformerMapper::flops(features, cells, s.prefix_length, hidden, s.mapper_layers)
        }
        MapperKind::None => 0.0,
        MapperKind::CrossAttention if features == hidden => 0.0,
        MapperKind::CrossAttention => 2.0 * (cells * features * hidden) as f64,
    }
}

/// Forward FLOPs per image of a decoder's cross-attention (products only):
/// each of `layers` layers maps `memory` encoder states of width `hidden`
/// to keys and values once (4·m·h²), and for each of `captions` captions
/// of `tokens` positions projects the queries and the output (4·t·h²) and
/// forms scores and context (4·t·m·h).
pub fn cross_attention_flops(
    layers: usize,
    hidden: usize,
    memory: usize,
    captions: f64,
    tokens: usize,
) -> f64 {
    let (l, h, m, t) = (layers as f64, hidden as f64, memory as f64, tokens as f64);
    l * (4.0 * m * h * h + captions * (4.0 * t * h * h + 4.0 * t * m * h))
}

/// Cells of a `--feature-grid` (the pooled vector is one).
pub fn grid_cells(grid: usize) -> usize {
    grid.max(1).pow(2)
}

impl<D: CausalLm> PrefixHead<D> {
    /// The prefix `[batch, P, hidden]` of the image features.
    pub fn prefix(&self, features: Flow) -> Tensor<3> {
        if let Some(t) = &self.transformer {
            return t.forward(tokens(features));
        }
        let x = flattened(features);
        let [b, _] = x.dims();
        let h = self.decoder.hidden_size();
        let y = match self.mapping.as_slice() {
            [fc1, fc2] => fc2.apply(tanh(fc1.apply(x))),
            _ => x,
        };
        let width = y.dims()[1];
        y.reshape([b, width / h, h])
    }

    /// The encoder states `[batch, tokens, hidden]` a cross-attending
    /// language model reads: the image's tokens, through the projection
    /// (transformers' `enc_to_dec_proj`) where the widths differ.
    pub fn memory(&self, features: Flow) -> EncoderStates {
        let x = tokens(features);
        EncoderStates::new(match self.mapping.as_slice() {
            [proj] => proj.apply(x),
            _ => x,
        })
    }

    /// `prefix` followed by the embeddings of `start` (the tokens a
    /// caption begins with): where generation starts.
    pub fn prompt(&self, prefix: Tensor<3>, start: &[u32]) -> Tensor<3> {
        if start.is_empty() {
            return prefix;
        }
        let [b, _, _] = prefix.dims();
        let device = prefix.device();
        let ids: Vec<i64> = (0..b)
            .flat_map(|_| start.iter().map(|&t| t as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, start.len()]), &device);
        Tensor::cat(vec![prefix, self.decoder.embed_tokens(ids)], 1)
    }
}

/// One split: decoded images, and each image's captions as token rows and
/// as text (its references).
pub struct CaptionSplit {
    pub images: ImageSplit,
    /// Per image, per caption: start tokens, the caption's tokens, EOS.
    pub tokens: Vec<Vec<Vec<u32>>>,
    pub references: Vec<Vec<String>>,
    /// Per image, the items its references name, when every reference of
    /// every image names the same non-empty set (captions that encode labels).
    pub labels: Option<Vec<Vec<usize>>>,
}

impl CaptionSplit {
    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Captions in all.
    pub fn captions(&self) -> usize {
        self.tokens.iter().map(Vec::len).sum()
    }
}

/// The labels the references of each image agree on, or `None` when some
/// image's references name none or disagree.
pub fn agreed_labels(references: &[Vec<String>]) -> Option<Vec<Vec<usize>>> {
    references
        .iter()
        .map(|refs| {
            let mut sets = refs.iter().map(|r| {
                let mut c = named_classes(r);
                c.sort_unstable();
                c
            });
            let first = sets.next()?;
            (!first.is_empty() && sets.all(|s| s == first)).then_some(first)
        })
        .collect()
}

/// The captions of a batch, teacher-forced.
pub struct CaptionTargets {
    /// `[captions]`: the batch row (image) of each caption.
    owner: Tensor<1, Int>,
    /// `[captions, tokens]`: each caption's tokens, padded.
    ids: Tensor<2, Int>,
    /// `[captions, tokens]`: 1 at real tokens.
    mask: Tensor<2>,
    /// `[captions, tokens]`: 1 where the token is predicted (not a start token).
    weight: Tensor<2>,
    count: usize,
}

/// Validation (and testing) of a captioner.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CaptionMetrics {
    /// Mean next-token negative log-likelihood of the reference captions.
    pub loss: f64,
    pub bleu: [f64; 4],
    pub rouge_l: f64,
    pub cider_d: f64,
    /// Share of generated captions naming exactly the items of their image
    /// (where the references name them; see [`CaptionSplit::labels`]).
    pub label_accuracy: Option<f64>,
    pub images: usize,
    /// The first generated captions, by image file.
    pub samples: Vec<(String, String)>,
}

impl CaptionMetrics {
    /// One line for the log.
    pub fn describe(&self) -> String {
        format!(
            "BLEU-4 {:.4}, CIDEr-D {:.4}, ROUGE-L {:.4}{}, caption loss {:.4}; e.g. {:?}",
            self.bleu[3],
            self.cider_d,
            self.rouge_l,
            self.label_accuracy
                .map(|a| format!(", label accuracy {a:.4}"))
                .unwrap_or_default(),
            self.loss,
            self.samples.first().map(|s| s.1.as_str()).unwrap_or(""),
        )
    }
}

/// Generated captions kept in [`CaptionMetrics::samples`].
pub const SAMPLES: usize = 8;

/// What every captioner shares, whatever its language-model family: the
/// run's state, the image preprocessing and the tokenizer.
#[derive(Clone)]
pub struct CaptionCore {
    pub state: CaptionTaskState,
    /// Preprocesses images (its label map is unused).
    pub image: ImageClassification,
    pub tokenizer: tokenizers::Tokenizer,
}

impl CaptionCore {
    pub fn new(state: CaptionTaskState, tokenizer: tokenizers::Tokenizer, seed: u64) -> Self {
        let image = ImageClassification {
            labels: LabelMap {
                labels: vec![IMAGE_LABEL.into()],
            },
            recipe: state.recipe.clone(),
            seed,
        };
        Self {
            state,
            image,
            tokenizer,
        }
    }

    /// A caption's token row: start tokens, its tokens, the first EOS.
    pub fn caption_tokens(&self, caption: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(caption, false)
            .map_err(|e| anyhow::anyhow!("cannot tokenise caption {caption:?}: {e}"))?;
        let mut row = self.state.start.clone();
        row.extend_from_slice(enc.get_ids());
        row.push(self.state.eos[0]);
        Ok(row)
    }

    /// The text of generated ids (special tokens dropped).
    pub fn text(&self, ids: &[u32]) -> String {
        let ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|t| !self.state.eos.contains(t))
            .collect();
        self.tokenizer
            .decode(&ids, true)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// The generated captions of a split's outputs.
    pub fn captions(&self, outputs: &[Vec<f32>]) -> Vec<String> {
        outputs
            .iter()
            .map(|o| {
                let ids: Vec<u32> = o[2..].iter().map(|&x| x as u32).collect();
                self.text(&ids)
            })
            .collect()
    }

    /// Metrics of a split from its outputs (`[loss sum, tokens, ids...]`
    /// per image).
    pub fn metrics(&self, split: &CaptionSplit, outputs: &[Vec<f32>]) -> CaptionMetrics {
        let hyps = self.captions(outputs);
        let (nll, tokens) = outputs.iter().fold((0.0, 0.0), |(a, b), o| {
            (a + f64::from(o[0]), b + f64::from(o[1]))
        });
        let s = score(&split.references, &hyps).expect("one hypothesis per image");
        let label_accuracy = split.labels.as_ref().map(|labels| {
            let right = hyps
                .iter()
                .zip(labels)
                .filter(|(h, l)| names_the_labels(h, l))
                .count();
            right as f64 / hyps.len().max(1) as f64
        });
        CaptionMetrics {
            loss: nll / tokens.max(1.0),
            bleu: s.bleu,
            rouge_l: s.rouge_l,
            cider_d: s.cider_d,
            label_accuracy,
            images: hyps.len(),
            samples: split
                .images
                .files
                .iter()
                .zip(&hyps)
                .take(SAMPLES)
                .map(|(f, h)| (f.display().to_string(), h.clone()))
                .collect(),
        }
    }

    fn batch(&self, split: &CaptionSplit, idx: &[usize], device: &Device) -> CaptionTargets {
        let rows: Vec<(usize, &Vec<u32>)> = idx
            .iter()
            .enumerate()
            .flat_map(|(b, &i)| split.tokens[i].iter().map(move |r| (b, r)))
            .collect();
        let n = rows.len();
        let t = rows.iter().map(|(_, r)| r.len()).max().unwrap_or(0);
        let start = self.state.start.len();
        let pad = i64::from(self.state.eos[0]);
        let mut ids = vec![pad; n * t];
        let mut mask = vec![0f32; n * t];
        let mut weight = vec![0f32; n * t];
        let mut count = 0;
        for (c, (_, r)) in rows.iter().enumerate() {
            for (j, &tok) in r.iter().enumerate() {
                ids[c * t + j] = i64::from(tok);
                mask[c * t + j] = 1.0;
                if j >= start {
                    weight[c * t + j] = 1.0;
                    count += 1;
                }
            }
        }
        let owner: Vec<i64> = rows.iter().map(|(b, _)| *b as i64).collect();
        CaptionTargets {
            owner: Tensor::from_data(TensorData::new(owner, [n]), device),
            ids: Tensor::from_data(TensorData::new(ids, [n, t]), device),
            mask: Tensor::from_data(TensorData::new(mask, [n, t]), device),
            weight: Tensor::from_data(TensorData::new(weight, [n, t]), device),
            count,
        }
    }
}

/// The one label the image loader is given (captions have none).
const IMAGE_LABEL: &str = "image";

/// The task, for language-model family `D`.
pub struct Captioning<D> {
    pub core: CaptionCore,
    /// Forward FLOPs per image of the mapper and of the language model
    /// (the training split's mean captions and caption length), for the
    /// cost account.
    pub flops_per_image: (f64, f64),
    /// A weights file whose `mapping.0.*` the mapper starts from instead of
    /// its init (a converted encoder-decoder's projection).
    pub pretrained_mapping: Option<PathBuf>,
    _decoder: PhantomData<fn() -> D>,
}

impl<D: CausalLm> Captioning<D> {
    pub fn new(core: CaptionCore, flops_per_image: (f64, f64)) -> Self {
        Self {
            core,
            flops_per_image,
            pretrained_mapping: None,
            _decoder: PhantomData,
        }
    }

    fn decoder_source(&self) -> &Path {
        &self.core.state.decoder.dir
    }

    /// Whether the language model cross-attends to the image instead of
    /// reading a prefix.
    fn cross(&self) -> bool {
        self.core.state.mapper == MapperKind::CrossAttention
    }

    /// What the language model is conditioned on for the images' features.
    fn condition(&self, head: &PrefixHead<D>, features: Flow) -> Condition {
        if self.cross() {
            Condition::Memory(head.memory(features))
        } else {
            Condition::Prefix(head.prefix(features))
        }
    }

    /// The negative log-likelihood `[captions, tokens]` of each predicted
    /// caption token given the images' condition (zero where nothing is
    /// predicted). After a prefix its last position predicts the first
    /// token; a cross-attending model predicts each token from the one
    /// before (the first, a start token, is never predicted, so its column
    /// is left out).
    fn token_nll(&self, head: &PrefixHead<D>, cond: &Condition, t: &CaptionTargets) -> Tensor<2> {
        let [n, tokens] = t.ids.dims();
        let device = t.ids.device();
        match cond {
            Condition::Prefix(prefix) => {
                let [_, p, _] = prefix.dims();
                let rows = prefix.clone().select(0, t.owner.clone());
                let x = Tensor::cat(vec![rows, head.decoder.embed_tokens(t.ids.clone())], 1);
                let mask = Tensor::cat(vec![Tensor::ones([n, p], &device), t.mask.clone()], 1);
                let logits = head.decoder.forward_embeds(
                    x,
                    positions(n, 0, p + tokens, &device),
                    mask,
                    None,
                );
                let picked =
                    crate::kernels::log_prob(logits.narrow(1, p - 1, tokens), t.ids.clone());
                (picked * t.weight.clone()).neg()
            }
            Condition::Memory(memory) => {
                let memory = memory.select(t.owner.clone());
                let logits = head.decoder.forward_memory(
                    head.decoder.embed_tokens(t.ids.clone()),
                    positions(n, 0, tokens, &device),
                    t.mask.clone(),
                    &memory,
                );
                let picked = crate::kernels::log_prob(
                    logits.narrow(1, 0, tokens - 1),
                    t.ids.clone().narrow(1, 1, tokens - 1),
                );
                (picked * t.weight.clone().narrow(1, 1, tokens - 1)).neg()
            }
        }
    }

    /// Generated ids per image of a batch, given the images' condition.
    pub fn generate(&self, head: &PrefixHead<D>, cond: Condition) -> Vec<Vec<u32>> {
        let s = &self.core.state;
        let (prompt, memory) = match cond {
            Condition::Prefix(prefix) => (head.prompt(prefix, &s.start), None),
            Condition::Memory(m) => {
                let [b, _, _] = m.states.dims();
                let device = m.states.device();
                let ids: Vec<i64> = (0..b)
                    .flat_map(|_| s.start.iter().map(|&t| i64::from(t)))
                    .collect();
                let ids =
                    Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s.start.len()]), &device);
                (head.decoder.embed_tokens(ids), Some(m))
            }
        };
        let device = prompt.device();
        let d = s.decoding;
        let out = if d.beams > 1 {
            let opts = BeamSearch {
                beams: d.beams,
                length_penalty: d.length_penalty,
                no_repeat_ngram: d.no_repeat_ngram,
            };
            let start = match memory {
                Some(memory) => Start::Attending {
                    prefix: prompt,
                    memory,
                },
                None => Start::Prefix(prompt),
            };
            beam_search(
                &head.decoder,
                start,
                s.max_new_tokens,
                &opts,
                &s.eos,
                &device,
            )
        } else {
            generate_attending(
                &head.decoder,
                prompt,
                memory,
                s.max_new_tokens,
                &Sampling::greedy(),
                &s.eos,
                &device,
            )
        };
        out.expect("decoding settings are checked when the run starts")
            .into_iter()
            .map(|g| g.ids)
            .collect()
    }
}

/// What a captioner's language model reads of the image.
#[allow(clippy::large_enum_variant)] // one per batch, never stored
pub enum Condition {
    /// Input embeddings before the caption's tokens.
    Prefix(Tensor<3>),
    /// Encoder states every block cross-attends to.
    Memory(EncoderStates),
}

impl<D: CausalLm> Task for Captioning<D> {
    const NAME: &'static str = NAME;
    const HF_SUFFIX: &'static str = "Model";
    type Head = PrefixHead<D>;
    type Split = CaptionSplit;
    type Targets = CaptionTargets;
    type Metrics = CaptionMetrics;

    fn new_head<A: Architecture>(&self, body: &A, device: &Device) -> PrefixHead<D> {
        let s = &self.core.state;
        let config = self.decoder_source().join("config.json");
        let mut decoder = if self.cross() {
            D::with_cross_attention(&config, device)
        } else {
            D::from_config_file(&config, device)
        }
        .expect("the decoder's config was read when the run started");
        if let Some(lora) = &s.decoder.lora {
            decoder.lora_walk(
                &lora.targets,
                &mut LoraOp::Add {
                    config: lora,
                    rng: &mut SeededRng::new(0),
                },
            );
        }
        let cells = grid_cells(s.feature_grid);
        let transformer = (s.mapper == MapperKind::Transformer).then(|| {
            TransformerMapper::new(
                body.feature_size(),
                cells,
                s.prefix_length,
                decoder.hidden_size(),
                s.mapper_layers,
                device,
            )
        });
        let mapper = match s.mapper {
            MapperKind::Mlp => vec![
                crate::models::transformer::linear(
                    body.feature_size() * cells,
                    s.mapper_hidden,
                    true,
                    device,
                ),
                crate::models::transformer::linear(
                    s.mapper_hidden,
                    s.prefix_length * decoder.hidden_size(),
                    true,
                    device,
                ),
            ],
            MapperKind::CrossAttention if body.feature_size() != decoder.hidden_size() => {
                vec![crate::models::transformer::linear(
                    body.feature_size(),
                    decoder.hidden_size(),
                    true,
                    device,
                )]
            }
            MapperKind::None | MapperKind::Transformer | MapperKind::CrossAttention => Vec::new(),
        };
        PrefixHead {
            mapping: mapper,
            transformer,
            decoder,
        }
    }

    fn lengths(split: &CaptionSplit) -> Vec<usize> {
        vec![1; split.len()]
    }

    fn input(&self, split: &CaptionSplit, idx: &[usize], device: &Device) -> Flow {
        self.core.image.input(&split.images, idx, device)
    }

    fn targets(&self, split: &CaptionSplit, idx: &[usize], device: &Device) -> CaptionTargets {
        self.core.batch(split, idx, device)
    }

    fn hash_inputs(&self, split: &CaptionSplit, key: &mut KeyHasher) {
        self.core.image.hash_inputs(&split.images, key);
    }

    fn loss(&self, head: &PrefixHead<D>, features: Flow, t: CaptionTargets) -> Tensor<1> {
        let cond = self.condition(head, features);
        self.token_nll(head, &cond, &t).sum() / t.count.max(1) as f64
    }

    fn outputs(
        &self,
        head: &PrefixHead<D>,
        features: Flow,
        split: &CaptionSplit,
        idx: &[usize],
    ) -> Vec<Vec<f32>> {
        let device = features.device();
        let t = self.core.batch(split, idx, &device);
        let cond = self.condition(head, features);
        let mut out: Vec<Vec<f32>> = vec![vec![0.0, 0.0]; idx.len()];
        // images without captions (prediction) have no loss to report
        if t.count > 0 {
            let n = t.ids.dims()[0];
            let host = |x: Tensor<1>| -> Vec<f32> {
                x.into_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .expect("float")
            };
            let nll = host(self.token_nll(head, &cond, &t).sum_dim(1).reshape([n]));
            let counts = host(t.weight.sum_dim(1).reshape([n]));
            let owner: Vec<i64> = t.owner.into_data().try_into_vec_as().expect("ids");
            for ((o, l), c) in owner.iter().zip(nll).zip(counts) {
                out[*o as usize][0] += l;
                out[*o as usize][1] += c;
            }
        }
        for (o, ids) in out.iter_mut().zip(self.generate(head, cond)) {
            o.extend(ids.into_iter().map(|t| t as f32));
        }
        out
    }

    fn metrics(&self, split: &CaptionSplit, outputs: &[Vec<f32>]) -> CaptionMetrics {
        self.core.metrics(split, outputs)
    }

    fn score(m: &CaptionMetrics, name: MetricName) -> f64 {
        match name {
            MetricName::Loss | MetricName::Perplexity => -m.loss,
            MetricName::Bleu4 => m.bleu[3],
            MetricName::Cider => m.cider_d,
            MetricName::Accuracy | MetricName::MacroF1 => m.label_accuracy.unwrap_or(m.cider_d),
        }
    }

    fn loss_of(m: &CaptionMetrics) -> f64 {
        m.loss
    }

    fn describe(m: &CaptionMetrics) -> String {
        m.describe()
    }

    fn head_flops<A: Architecture>(&self, _body: &A, batch: usize) -> f64 {
        let (mapper, decoder) = self.flops_per_image;
        (mapper + decoder) * batch as f64
    }

    /// The mapper computes both gradients; the language model only the
    /// input gradients when none of its weights train (`frozen`) or only
    /// its adapters do (`lora`; the adapters' own FLOPs are left out).
    fn head_backward_flops<A: Architecture>(&self, _body: &A, batch: usize) -> f64 {
        let (mapper, decoder) = self.flops_per_image;
        let weights = match self.core.state.decoder.strategy {
            Strategy::Head | Strategy::Lora(_) => 1.0,
            _ => 2.0,
        };
        (2.0 * mapper + weights * decoder) * batch as f64
    }

    fn export_config(&self, obj: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
        let mut state = self.core.state.clone();
        // the export holds the language model merged, under `decoder/`
        state.decoder.dir = PathBuf::from(DECODER_DIR);
        state.decoder.lora = None;
        obj.insert(CONFIG_FIELD.into(), serde_json::to_value(&state)?);
        obj.insert(
            "preprocessing".into(),
            serde_json::to_value(&self.core.state.recipe)?,
        );
        Ok(())
    }

    fn export_files(&self) -> Vec<(&'static str, serde_json::Value)> {
        self.core.image.export_files()
    }

    fn adapt_body<A: Architecture>(&self, body: A) -> A {
        let body = self
            .core
            .image
            .adapt_body(body)
            .with_feature_grid(self.core.state.feature_grid);
        if self.cross() {
            body.with_all_tokens()
        } else {
            body
        }
    }

    fn start_epoch(&self, split: &CaptionSplit, epoch: usize) {
        self.core.image.start_epoch(&split.images, epoch);
    }

    fn augmented(&self, split: &CaptionSplit) -> bool {
        self.core.image.augmented(&split.images)
    }

    fn load_head(&self, head: PrefixHead<D>, seed: u64) -> Result<(PrefixHead<D>, Vec<String>)> {
        let PrefixHead {
            mapping: mapper,
            transformer,
            decoder,
        } = head;
        let mut rng = SeededRng::new(seed ^ 0x4D41_5050);
        let mut mapper: Vec<Linear> = mapper
            .into_iter()
            .map(|l| torch_linear(l, &mut rng))
            .collect();
        let mut lines = Vec::new();
        if let Some(path) = &self.pretrained_mapping {
            mapper = pretrained_linears(mapper, path)?;
            lines.push(format!("mapper from {}", path.display()));
        }
        let transformer = transformer.map(|t| t.init(&mut rng));
        let part = &self.core.state.decoder;
        let wrapped = TaskModel {
            body: decoder,
            head: NoHead,
        };
        let (wrapped, mut report) = if part.strategy.uses_pretrained_weights() {
            let checkpoint = crate::hub::Checkpoint::open(&part.dir)?;
            state::load(wrapped, Source::Pretrained(&checkpoint), seed)?
        } else {
            state::load(wrapped, Source::Scratch, seed)?
        };
        report
            .missing
            .retain(|k| !k.contains("lora_A") && !k.contains("lora_B"));
        lines.push(format!(
            "language model ({}) {} ({} tensors loaded), strategy {}",
            part.model_type,
            if report.from_scratch {
                "from scratch".to_string()
            } else {
                format!("from {}", part.dir.display())
            },
            report.loaded,
            part.strategy
        ));
        lines.extend(
            report
                .lines()
                .into_iter()
                .map(|l| format!("language model: {l}")),
        );
        Ok((
            PrefixHead {
                mapping: mapper,
                transformer,
                decoder: wrapped.body,
            },
            lines,
        ))
    }

    fn head_trainable(&self, head: PrefixHead<D>, epoch: usize) -> PrefixHead<D> {
        let PrefixHead {
            mapping: mapper,
            transformer,
            decoder,
        } = head;
        let wrapped = TaskModel {
            body: decoder,
            head: NoHead,
        };
        let n = wrapped.num_groups();
        let wrapped = match self.core.state.decoder.strategy {
            Strategy::Lora(_) => freeze_all_but_adapters(wrapped, &|_| false),
            Strategy::Head => wrapped.set_trainable(&vec![false; n]),
            s => wrapped.set_trainable(&s.trainable(n, epoch)),
        };
        // cross-attention layers the decoder was given for this task train
        // whatever the strategy: a frozen random layer would only add noise
        let wrapped = if self.cross() {
            train_also(wrapped, &is_cross_attention)
        } else {
            wrapped
        };
        PrefixHead {
            mapping: mapper,
            transformer,
            decoder: wrapped.body,
        }
    }

    fn exports_param(path: &str) -> bool {
        !path.starts_with("head.decoder.")
    }

    fn export_head(&self, head: &PrefixHead<D>, out: &Path) -> Result<()> {
        let mut decoder = head.decoder.clone();
        if self.core.state.decoder.lora.is_some() {
            decoder.lora_walk(&[], &mut LoraOp::Merge);
        }
        write_decoder(
            decoder,
            self.decoder_source(),
            &out.join(DECODER_DIR),
            self.cross(),
        )?;
        // a ViT read by a GPT-2 is transformers' VisionEncoderDecoderModel:
        // written in its layout too (the config and weights are in `out` by now)
        let encoder_type = std::fs::read_to_string(out.join("config.json"))
            .ok()
            .and_then(|raw| serde_json::from_str::<serde_json::Value>(&raw).ok())
            .and_then(|c| c["model_type"].as_str().map(str::to_string));
        if self.cross() && D::MODEL_TYPE == "gpt2" && encoder_type.as_deref() == Some("vit") {
            let preprocessor = self
                .export_files()
                .into_iter()
                .find(|(name, _)| *name == "preprocessor_config.json")
                .map(|(_, v)| v)
                .unwrap_or_default();
            crate::models::encoder_decoder::layout::write_encoder_decoder(
                out,
                &preprocessor,
                &out.join(crate::models::encoder_decoder::layout::DIR),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
