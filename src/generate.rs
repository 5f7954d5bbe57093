//! Text generation with a causal LM: prompts are run once, batched and
//! left-padded, then one token per step through the key/value cache
//! ([`crate::models::causal::KvCache`]); each sequence stops at an
//! end-of-sequence token or after `max_new` tokens, and finished sequences
//! leave the batch. Decoding is greedy (`temperature` 0, which equals
//! transformers' `do_sample=False`) or sampled with temperature, top-k and
//! top-p (nucleus) filtering from a seeded generator: the same seed gives
//! the same text.

use anyhow::{Result, bail};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::models::causal::{CausalLm, EncoderStates, KvCache};
use crate::models::lora::peft::{self, PeftAdapter};
use crate::models::params::SeededRng;

pub mod beam;
pub use beam::{BeamSearch, Start, beam_search};

/// How the next token is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (the most likely token); otherwise logits are divided by it.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`None`: all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability
    /// reaches `p` (`None` or 1: all).
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Sampling {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }

    /// Rejects values no sampler can use.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(
                "--temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            );
        }
        if self.top_k == Some(0) {
            bail!("--top-k must be at least 1");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            bail!("--top-p must be in (0, 1], got {p}");
        }
        Ok(())
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// It produced an end-of-sequence token (kept as its last token).
    Eos,
    /// It reached the token budget.
    Length,
}

/// One prompt's continuation.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The new tokens (an EOS that ended it included, as transformers returns it).
    pub ids: Vec<u32>,
    pub stop: Stop,
}

impl Generated {
    /// No token yet; ends by length unless a stop token comes.
    pub fn unfinished() -> Self {
        Self {
            ids: Vec::new(),
            stop: Stop::Length,
        }
    }
}

/// The next token from one row of logits.
pub fn choose(logits: &[f32], sampling: &Sampling, rng: &mut SeededRng) -> u32 {
    if sampling.temperature == 0.0 {
        // the first maximum, as torch.argmax
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if let Some(k) = sampling.top_k {
        order.truncate(k.max(1));
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / sampling.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = sampling.top_p.filter(|&p| p < 1.0) {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            cumulative += p;
            if cumulative >= top_p {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
    }
    let mut u = rng.uniform();
    for (i, p) in order.iter().zip(&probs) {
        if u < *p {
            return *i as u32;
        }
        u -= p;
    }
    *order.last().expect("at least one token") as u32
}

/// Continues each prompt (token ids, none empty) by at most `max_new`
/// tokens; see the module doc. `model` should be on a plain (inference)
/// device.
pub fn generate<A: CausalLm>(
    model: &A,
    prompts: &[Vec<u32>],
    max_new: usize,
    sampling: &Sampling,
    stop: &[u32],
    device: &Device,
) -> Result<Vec<Generated>> {
    sampling.check()?;
    let longest = check_prompts(prompts, max_new, model.max_positions())?;
    let mut out = vec![Generated::unfinished(); prompts.len()];
    if max_new == 0 || prompts.is_empty() {
        return Ok(out);
    }
    let b = prompts.len();
    let Padded { ids, pos, mask } = left_pad(prompts, longest, 1);
    let ints = |v: Vec<i64>, n: usize, s: usize| {
        Tensor::<2, Int>::from_data(TensorData::new(v, [n, s]), device)
    };
    let key_mask: Vec<Vec<f32>> = mask.chunks(longest).map(<[f32]>::to_vec).collect();
    let next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    let mut cache = KvCache::new(model.num_layers());
    let logits = model.forward_cached(
        ints(ids, b, longest),
        ints(pos, b, longest),
        Tensor::from_data(TensorData::new(mask, [b, longest]), device),
        &mut cache,
    );
    let mut rng = SeededRng::new(sampling.seed);
    let state = Decoding {
        logits,
        cache,
        key_mask,
        next_pos,
    };
    decode(
        model, state, max_new, sampling, &mut rng, stop, device, &mut out,
    )?;
    Ok(out)
}

/// The length of the longest of `prompts`; an error when one is empty or
/// when it and `max_new` new tokens exceed `max_positions`.
fn check_prompts(prompts: &[Vec<u32>], max_new: usize, max_positions: usize) -> Result<usize> {
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        bail!("prompt {} is empty: give at least one token", i + 1);
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + max_new > max_positions {
        bail!(
            "a prompt of {longest} tokens plus {max_new} new ones exceeds the model's context of {max_positions} positions"
        );
    }
    Ok(longest)
}

/// Prompts left-padded to one width, row-major: token ids (padding repeats
/// the first token), position ids counting real tokens only, key mask.
struct Padded {
    ids: Vec<i64>,
    pos: Vec<i64>,
    mask: Vec<f32>,
}

/// `prompts` left-padded to `width`, each row `copies` times in a row.
fn left_pad(prompts: &[Vec<u32>], width: usize, copies: usize) -> Padded {
    let mut out = Padded {
        ids: Vec::new(),
        pos: Vec::new(),
        mask: Vec::new(),
    };
    for p in prompts {
        let pad = width - p.len();
        for _ in 0..copies {
            out.ids.extend(
                (0..pad)
                    .map(|_| p[0] as i64)
                    .chain(p.iter().map(|&t| t as i64)),
            );
            out.pos
                .extend((0..pad).map(|_| 0i64).chain((0..p.len()).map(|t| t as i64)));
            out.mask
                .extend((0..pad).map(|_| 0.0f32).chain(p.iter().map(|_| 1.0)));
        }
    }
    out
}

/// Continues each row of `prefix` (`[batch, positions, hidden]` input
/// embeddings, e.g. an image mapped into the model's embedding space) by at
/// most `max_new` tokens, as [`generate`] continues token prompts.
pub fn generate_from_embeds<A: CausalLm>(
    model: &A,
    prefix: Tensor<3>,
    max_new: usize,
    sampling: &Sampling,
    stop: &[u32],
    device: &Device,
) -> Result<Vec<Generated>> {
    generate_attending(model, prefix, None, max_new, sampling, stop, device)
}

/// [`generate_from_embeds`] for a decoder with cross-attention: every
/// step of row `i` also attends to row `i` of `memory` (an image's encoder
/// states), whose keys and values each layer computes once.
pub fn generate_attending<A: CausalLm>(
    model: &A,
    prefix: Tensor<3>,
    memory: Option<EncoderStates>,
    max_new: usize,
    sampling: &Sampling,
    stop: &[u32],
    device: &Device,
) -> Result<Vec<Generated>> {
    sampling.check()?;
    let [b, p, _] = prefix.dims();
    if p == 0 {
        bail!("the prefix is empty: give at least one position");
    }
    if p + max_new > model.max_positions() {
        bail!(
            "a prefix of {p} positions plus {max_new} new tokens exceeds the model's context of {} positions",
            model.max_positions()
        );
    }
    let mut out = vec![Generated::unfinished(); b];
    if max_new == 0 || b == 0 {
        return Ok(out);
    }
    let positions: Vec<i64> = (0..b).flat_map(|_| 0..p as i64).collect();
    let mut cache = KvCache::with_memory(model.num_layers(), memory);
    let logits = model.forward_embeds(
        prefix,
        Tensor::<2, Int>::from_data(TensorData::new(positions, [b, p]), device),
        Tensor::ones([b, p], device),
        Some(&mut cache),
    );
    let mut rng = SeededRng::new(sampling.seed);
    let state = Decoding {
        logits,
        cache,
        key_mask: vec![vec![1.0; p]; b],
        next_pos: vec![p as i64; b],
    };
    decode(
        model, state, max_new, sampling, &mut rng, stop, device, &mut out,
    )?;
    Ok(out)
}

/// Where decoding stands after the prefill: the last logits, the cache,
/// each row's key mask and next position id.
struct Decoding {
    logits: Tensor<3>,
    cache: KvCache,
    key_mask: Vec<Vec<f32>>,
    next_pos: Vec<i64>,
}

/// The token-by-token loop shared by [`generate`] and
/// [`generate_from_embeds`]: rows that stop leave the batch.
#[allow(clippy::too_many_arguments)]
fn decode<A: CausalLm>(
    model: &A,
    state: Decoding,
    max_new: usize,
    sampling: &Sampling,
    rng: &mut SeededRng,
    stop: &[u32],
    device: &Device,
    out: &mut [Generated],
) -> Result<()> {
    let ints = |v: Vec<i64>, n: usize, s: usize| {
        Tensor::<2, Int>::from_data(TensorData::new(v, [n, s]), device)
    };
    let Decoding {
        mut logits,
        mut cache,
        mut key_mask,
        mut next_pos,
    } = state;
    // rows of the batch -> prompt index
    let mut active: Vec<usize> = (0..out.len()).collect();
    for step in 0..max_new {
        let [n, s, v] = logits.dims();
        let last: Vec<f32> = logits
            .slice([0..n, s - 1..s, 0..v])
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("logits: {e:?}"))?;
        let mut chosen = Vec::with_capacity(n);
        let mut keep = Vec::with_capacity(n);
        for (row, &prompt) in active.iter().enumerate() {
            let token = choose(&last[row * v..(row + 1) * v], sampling, rng);
            out[prompt].ids.push(token);
            if stop.contains(&token) {
                out[prompt].stop = Stop::Eos;
            } else {
                keep.push(row);
                chosen.push(token);
            }
        }
        if keep.is_empty() || step + 1 == max_new {
            break;
        }
        if keep.len() < active.len() {
            cache.select(&keep, device);
            active = keep.iter().map(|&r| active[r]).collect();
            key_mask = keep.iter().map(|&r| key_mask[r].clone()).collect();
            next_pos = keep.iter().map(|&r| next_pos[r]).collect();
        }
        let n = active.len();
        for m in &mut key_mask {
            m.push(1.0);
        }
        let total = key_mask[0].len();
        logits = model.forward_cached(
            ints(chosen.iter().map(|&t| t as i64).collect(), n, 1),
            ints(next_pos.clone(), n, 1),
            Tensor::from_data(TensorData::new(key_mask.concat(), [n, total]), device),
            &mut cache,
        );
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(())
}

/// A causal LM ready to generate, its family erased: what `generate`
/// and captioning decoders call.
pub struct LanguageModel {
    pub tokenizer: tokenizers::Tokenizer,
    /// Tokens that end a sequence (`config.json`'s and
    /// `generation_config.json`'s `eos_token_id`).
    pub eos: Vec<u32>,
    pub max_positions: usize,
    /// The family (`config.json`'s `model_type`).
    pub family: String,
    run: RunFn,
    beam: BeamFn,
}

type RunFn = Box<dyn Fn(&[Vec<u32>], usize, &Sampling, &[u32], &Device) -> Result<Vec<Generated>>>;
type BeamFn =
    Box<dyn Fn(&[Vec<u32>], usize, &BeamSearch, &[u32], &Device) -> Result<Vec<Generated>>>;

impl LanguageModel {
    /// Continues `prompts` (token ids); see [`generate`].
    pub fn generate_ids(
        &self,
        prompts: &[Vec<u32>],
        max_new: usize,
        sampling: &Sampling,
        device: &Device,
    ) -> Result<Vec<Generated>> {
        (self.run)(prompts, max_new, sampling, &self.eos, device)
    }

    /// Continues `prompts` by beam search; see [`beam_search`].
    pub fn beam_ids(
        &self,
        prompts: &[Vec<u32>],
        max_new: usize,
        opts: &BeamSearch,
        device: &Device,
    ) -> Result<Vec<Generated>> {
        (self.beam)(prompts, max_new, opts, &self.eos, device)
    }

    /// Token ids of `text` as the model reads a prompt (with the special
    /// tokens its tokenizer adds, such as a BOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(crate::tokenize::encode_documents(&self.tokenizer, &[text])?.remove(0))
    }

    /// The text of generated ids, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| anyhow::anyhow!("cannot decode tokens: {e}"))
    }
}

/// `eos_token_id` of a config file (a number or a list), if any.
fn eos_ids(path: &std::path::Path) -> Result<Vec<u32>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", path.display()))?;
    Ok(match v.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|n| vec![n as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|n| n.as_u64())
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    })
}

/// `body` with every parameter read from the checkpoint in `dir`; a
/// parameter it lacks is an error naming it.
pub fn load_weights<A: CausalLm>(body: A, dir: &std::path::Path) -> Result<A> {
    use crate::models::TaskModel;
    use crate::models::state::{self, Source};
    use crate::tasks::causal_lm::NoHead;
    let checkpoint = crate::hub::Checkpoint::open(dir)?;
    let (model, report) = state::load(
        TaskModel { body, head: NoHead },
        Source::Pretrained(&checkpoint),
        0,
    )?;
    if let Some(k) = report.missing.first() {
        bail!(
            "{}: the checkpoint lacks `{k}`{}: it is damaged or not a {} model of this config",
            dir.display(),
            if report.missing.len() > 1 {
                format!(" (and {} more)", report.missing.len() - 1)
            } else {
                String::new()
            },
            A::MODEL_TYPE
        );
    }
    Ok(model.body)
}

/// Loads family `A` from model directory `dir` (every parameter must be
/// there) on `device`, with its tokenizer.
pub fn load_family<A: CausalLm + 'static>(
    dir: &std::path::Path,
    device: &Device,
) -> Result<LanguageModel> {
    load_family_with::<A>(dir, None, device)
}

/// [`load_family`] with a PEFT adapter on the model (merged into its
/// weights: the same logits, no adapter cost per token).
pub fn load_family_with<A: CausalLm + 'static>(
    dir: &std::path::Path,
    adapter: Option<&PeftAdapter>,
    device: &Device,
) -> Result<LanguageModel> {
    use crate::models::TaskModel;
    use crate::tasks::causal_lm::NoHead;
    let body = A::from_config_file(&dir.join("config.json"), device)?;
    let body = load_weights(body, dir)?;
    let body = match adapter {
        Some(a) => {
            a.attach(TaskModel { body, head: NoHead })?
                .merge_lora()
                .body
        }
        None => body,
    };
    let mut eos = body.eos_token_ids();
    for id in eos_ids(&dir.join("generation_config.json"))? {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    let max_positions = body.max_positions();
    let body = std::rc::Rc::new(body);
    let for_beams = body.clone();
    Ok(LanguageModel {
        tokenizer: crate::tokenize::lm_tokenizer(dir)?,
        eos,
        max_positions,
        family: A::MODEL_TYPE.to_string(),
        run: Box::new(move |prompts, max_new, sampling, stop, device| {
            generate(&*body, prompts, max_new, sampling, stop, device)
        }),
        beam: Box::new(move |prompts, max_new, opts, stop, device| {
            beam_search(
                &*for_beams,
                Start::Prompts(prompts),
                max_new,
                opts,
                stop,
                device,
            )
        }),
    })
}

/// Loads the causal LM at `model` (a run directory, an exported or HF
/// model directory) for generation.
pub fn load(model: &std::path::Path, device: &Device) -> Result<LanguageModel> {
    let dir = crate::train::eval::exported_model(model);
    let family = crate::models::model_type(&dir)?;
    crate::with_causal_family!(family.as_str(), A => load_family::<A>(&dir, device), else bail!(
        "{} is a `{family}` model, not a causal language model (causal-LM families: {})",
        dir.display(),
        crate::models::causal::CAUSAL_FAMILIES.join(", ")
    ))
}

/// The causal LM `spec` names for generation: a PEFT adapter directory
/// (`adapter_config.json`) on its base, which `base` (`--base`) names or
/// else the adapter's `base_model_name_or_path`; otherwise a model as
/// `--model` takes it ([`crate::train::resolve_model`], then [`load`]).
pub fn load_with_base(spec: &str, base: Option<&str>, device: &Device) -> Result<LanguageModel> {
    let path = std::path::Path::new(spec);
    if !peft::is_adapter_dir(path) || path.join("config.json").is_file() {
        if base.is_some() {
            bail!(
                "--base goes with a PEFT adapter directory (one with {}), and {spec} is not one",
                peft::CONFIG_FILE
            );
        }
        return load(&crate::train::resolve_model(spec)?, device);
    }
    let adapter = PeftAdapter::read(path)?;
    if let Some(t) = adapter.task_type.as_deref()
        && t != "CAUSAL_LM"
    {
        bail!(
            "{}: task_type is {t}: generation needs a causal language model's adapter (CAUSAL_LM)",
            path.join(peft::CONFIG_FILE).display()
        );
    }
    let dir = adapter.resolve_base(base)?;
    let family = crate::models::model_type(&dir)?;
    crate::with_causal_family!(family.as_str(), A => load_family_with::<A>(&dir, Some(&adapter), device), else bail!(
        "the adapter's base {} is a `{family}` model, not a causal language model (causal-LM families: {})",
        dir.display(),
        crate::models::causal::CAUSAL_FAMILIES.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = SeededRng::new(1);
        let s = Sampling::greedy();
        assert_eq!(choose(&[0.1, 2.0, 2.0, -1.0], &s, &mut rng), 1);
    }

    #[test]
    fn top_k_and_top_p_limit_the_candidates_and_seeds_repeat() {
        let logits = [3.0f32, 2.9, 0.0, -1.0, 2.8];
        let draw = |s: &Sampling| {
            let mut rng = SeededRng::new(s.seed);
            (0..400)
                .map(|_| choose(&logits, s, &mut rng))
                .collect::<Vec<_>>()
        };
        let top2 = Sampling {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
            seed: 7,
        };
        let a = draw(&top2);
        assert!(a.iter().all(|&t| t == 0 || t == 1));
        assert!(a.contains(&0) && a.contains(&1));
        assert_eq!(a, draw(&top2), "same seed, same draws");
        // probabilities ~ 0.35, 0.32, 0.29 for tokens 0, 1, 4: top-p 0.6 keeps two
        let nucleus = Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.6),
            seed: 3,
        };
        let b = draw(&nucleus);
        assert!(b.iter().all(|&t| t == 0 || t == 1), "{b:?}");
        // a low temperature concentrates on the maximum
        let cold = Sampling {
            temperature: 0.01,
            top_k: None,
            top_p: None,
            seed: 3,
        };
        assert!(draw(&cold).iter().all(|&t| t == 0));
        let all = Sampling {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 11,
        };
        let c = draw(&all);
        assert!(c.contains(&4) && c.contains(&2));
    }

    #[test]
    fn bad_sampling_settings_are_refused() {
        let mut s = Sampling::greedy();
        s.temperature = -1.0;
        assert!(s.check().is_err());
        s.temperature = 1.0;
        s.top_p = Some(1.5);
        assert!(s.check().unwrap_err().to_string().contains("top-p"));
        s.top_p = None;
        s.top_k = Some(0);
        assert!(s.check().is_err());
    }
}

#[cfg(test)]
mod family_tests {
    use super::*;
    use crate::models::TaskModel;
    use crate::models::state::{self, Source};
    use crate::tasks::causal_lm::NoHead;

    pub(super) fn fixture<A: CausalLm>(dir: &str) -> A {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let device = Device::default();
        let body = A::from_config_file(&dir.join("config.json"), &device).unwrap();
        let c = crate::hub::Checkpoint::open(&dir).unwrap();
        let (m, report) =
            state::load(TaskModel { body, head: NoHead }, Source::Pretrained(&c), 0).unwrap();
        assert!(report.missing.is_empty(), "{:?}", report.missing);
        m.body
    }

    /// Greedy continuation by re-running the whole sequence each step (no cache).
    fn uncached<A: CausalLm>(m: &A, prompt: &[u32], n: usize) -> Vec<u32> {
        let device = Device::default();
        let mut seq = prompt.to_vec();
        for _ in 0..n {
            let s = seq.len();
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(seq.iter().map(|&t| t as i64).collect(), [1, s]),
                &device,
            );
            let logits = m.forward_cached(
                ids,
                crate::models::causal::positions(1, 0, s, &device),
                Tensor::ones([1, s], &device),
                &mut KvCache::new(m.num_layers()),
            );
            let v = logits.dims()[2];
            let last: Vec<f32> = logits
                .slice([0..1, s - 1..s, 0..v])
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            seq.push(choose(&last, &Sampling::greedy(), &mut SeededRng::new(0)));
        }
        seq[prompt.len()..].to_vec()
    }

    fn batched_equals_alone_and_uncached<A: CausalLm>(m: &A) {
        let device = Device::default();
        let prompts = vec![vec![5, 9, 3, 7, 11, 2], vec![4, 8], vec![1, 30, 6]];
        let batch = generate(m, &prompts, 8, &Sampling::greedy(), &[], &device).unwrap();
        for (p, g) in prompts.iter().zip(&batch) {
            let alone = generate(
                m,
                std::slice::from_ref(p),
                8,
                &Sampling::greedy(),
                &[],
                &device,
            )
            .unwrap()
            .remove(0);
            assert_eq!(g, &alone, "prompt {p:?}: batched (left-padded) vs alone");
            assert_eq!(g.ids, uncached(m, p, 8), "prompt {p:?}: cached vs uncached");
            assert_eq!(g.stop, Stop::Length);
        }
        // the prompts' token embeddings as a prefix continue as the prompts do
        let same_length = vec![prompts[0].clone(), vec![3, 3, 8, 1, 9, 2]];
        let ids: Vec<i64> = same_length.concat().iter().map(|&t| t as i64).collect();
        let prefix = m.embed_tokens(Tensor::<2, Int>::from_data(
            TensorData::new(ids, [2, 6]),
            &device,
        ));
        let from_embeds =
            generate_from_embeds(m, prefix.clone(), 8, &Sampling::greedy(), &[], &device).unwrap();
        let from_ids = generate(m, &same_length, 8, &Sampling::greedy(), &[], &device).unwrap();
        assert_eq!(from_embeds, from_ids);
        let e = generate_from_embeds(
            m,
            prefix,
            m.max_positions(),
            &Sampling::greedy(),
            &[],
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("prefix of 6 positions"), "{e}");
        // a stop token ends its sequence (kept, as transformers returns it)
        let first = batch[1].ids[0];
        let stopped = generate(m, &prompts, 8, &Sampling::greedy(), &[first], &device).unwrap();
        assert_eq!(stopped[1].ids, vec![first]);
        assert_eq!(stopped[1].stop, Stop::Eos);
        let e = generate(
            m,
            &[vec![1; m.max_positions()]],
            1,
            &Sampling::greedy(),
            &[],
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("context"), "{e}");
    }

    #[test]
    fn gpt2_generation_batched_cached_and_stopped() {
        batched_equals_alone_and_uncached(&fixture::<crate::models::gpt2::Gpt2>(
            "tests/fixtures/gpt2/tied",
        ));
    }

    #[test]
    fn llama_generation_batched_cached_and_stopped() {
        batched_equals_alone_and_uncached(&fixture::<crate::models::llama::Llama>(
            "tests/fixtures/llama/tied_gqa",
        ));
    }
}
