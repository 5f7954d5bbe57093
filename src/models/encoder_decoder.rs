//! transformers' `VisionEncoderDecoderModel` with a ViT encoder and a GPT-2
//! decoder with cross-attention (`add_cross_attention`): the encoder's last
//! hidden states (every token, after its final LayerNorm), projected by
//! `enc_to_dec_proj` when the widths differ, are what every decoder block
//! cross-attends to. Loaded from and written back to the Hugging Face
//! layout (`config.json` with `encoder` and `decoder` configs;
//! `encoder.*`, `decoder.*`, `enc_to_dec_proj.*` tensors), which
//! `VisionEncoderDecoderModel.from_pretrained` reads.

use crate::kernels::matmul::LinearExt;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::nn::Linear;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::causal::positions;
use super::gpt2::{EncoderStates, Gpt2, Gpt2Config};
use super::state::{self, Source};
use super::vit::{Vit, VitConfig};
use super::{Architecture, Flow, TaskModel};
use crate::hub::Checkpoint;
use crate::tasks::causal_lm::NoHead;

/// `config.json`'s `model_type` of an encoder-decoder.
pub const MODEL_TYPE: &str = "vision-encoder-decoder";

/// The encoder-decoder; see the module doc.
#[derive(burn::module::Module, Debug)]
pub struct VisionEncoderDecoder {
    pub encoder: Vit,
    pub enc_to_dec_proj: Option<Linear>,
    pub decoder: Gpt2,
}

/// The tensors of `c` under `prefix`, without it.
fn part(c: &Checkpoint, prefix: &str) -> Checkpoint {
    Checkpoint {
        tensors: c
            .tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone())))
            .collect(),
        files: c.files.clone(),
        notes: Vec::new(),
        graph: None,
    }
}

/// Checks that `raw` (read from `path`) is an encoder-decoder config of the
/// parts headstart reads: a ViT encoder and a GPT-2 decoder.
pub fn check_config(raw: &serde_json::Value, path: &Path) -> Result<()> {
    if raw["model_type"] != MODEL_TYPE {
        bail!(
            "{} is a `{}` config, not a {MODEL_TYPE}",
            path.display(),
            raw["model_type"]
        );
    }
    for (side, want) in [("encoder", "vit"), ("decoder", "gpt2")] {
        if raw[side]["model_type"] != want {
            bail!(
                "{}: the {side} is a `{}`; headstart reads a vit encoder with a gpt2 decoder",
                path.display(),
                raw[side]["model_type"]
            );
        }
    }
    Ok(())
}

impl VisionEncoderDecoder {
    /// Loads the model directory `dir` (every tensor must be there).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let path = dir.join("config.json");
        let raw: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?;
        check_config(&raw, &path)?;
        let enc: VitConfig = serde_json::from_value(raw["encoder"].clone())
            .with_context(|| format!("{}: `encoder` is not a ViT config", path.display()))?;
        let dec: Gpt2Config = serde_json::from_value(raw["decoder"].clone())
            .with_context(|| format!("{}: `decoder` is not a GPT-2 config", path.display()))?;
        dec.validate()
            .with_context(|| format!("in {}'s decoder", path.display()))?;
        if !dec.add_cross_attention {
            bail!(
                "{}: the decoder has no cross-attention (add_cross_attention is false)",
                path.display()
            );
        }
        let weights = Checkpoint::open(dir)?;
        let encoder = Vit::new(&enc, device)?;
        let (encoder, _) = state::load(
            TaskModel {
                body: encoder,
                head: NoHead,
            },
            Source::Exact(&part(&weights, "encoder.")),
            0,
        )
        .context("loading the encoder")?;
        let decoder = Gpt2::new(&dec, device)?;
        let (decoder, _) = state::load(
            TaskModel {
                body: decoder,
                head: NoHead,
            },
            Source::Exact(&part(&weights, "decoder.")),
            0,
        )
        .context("loading the decoder")?;
        let enc_to_dec_proj = match weights.tensors.get("enc_to_dec_proj.weight") {
            None if enc.hidden_size != dec.n_embd => bail!(
                "{}: the encoder's width {} differs from the decoder's {} and there is no \
                 enc_to_dec_proj.weight to map one to the other",
                dir.display(),
                enc.hidden_size,
                dec.n_embd
            ),
            None => None,
            Some(w) => {
                let b = weights
                    .tensors
                    .get("enc_to_dec_proj.bias")
                    .with_context(|| {
                        format!("{} has enc_to_dec_proj.weight but no bias", dir.display())
                    })?;
                let [out, inp] = [w.shape[0], w.shape[1]];
                let wt = super::params::transpose(&w.data, out, inp);
                Some(Linear {
                    weight: burn::module::Param::from_tensor(Tensor::from_data(
                        TensorData::new(wt, [inp, out]),
                        device,
                    )),
                    bias: Some(burn::module::Param::from_tensor(Tensor::from_data(
                        TensorData::new(b.data.clone(), [out]),
                        device,
                    ))),
                })
            }
        };
        Ok(Self {
            encoder: encoder.body,
            enc_to_dec_proj,
            decoder: decoder.body,
        })
    }

    /// The states the decoder cross-attends to, `[batch, tokens, n_embd]`.
    pub fn encode(&self, pixels: Tensor<4>) -> Tensor<3> {
        let layers = self.encoder.config.num_hidden_layers;
        let Flow::Hidden { x, .. } = self.encoder.run(Flow::Maps(pixels), 0..layers + 1) else {
            unreachable!("ViT's layers return hidden states")
        };
        let x = self.encoder.layernorm.forward(x);
        match &self.enc_to_dec_proj {
            Some(p) => p.apply(x),
            None => x,
        }
    }

    /// Decoder logits `[batch, tokens, vocab]` for `ids` (unpadded) given
    /// the encoded images.
    pub fn decode(&self, states: &EncoderStates, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let device = ids.device();
        self.decoder.forward_cross(
            self.decoder.wte.forward(ids),
            positions(b, 0, t, &device),
            Tensor::ones([b, t], &device),
            None,
            Some(states),
        )
    }

    /// Logits for `pixels` and decoder input `ids`, as transformers'
    /// `model(pixel_values=..., decoder_input_ids=...)`.
    pub fn forward(&self, pixels: Tensor<4>, ids: Tensor<2, Int>) -> Tensor<3> {
        self.decode(&EncoderStates::new(self.encode(pixels)), ids)
    }

    /// Greedy decoding of `max_new` tokens after `start` for each image
    /// (no early stop; the whole sequence is rerun each step).
    pub fn greedy(&self, pixels: Tensor<4>, start: u32, max_new: usize) -> Vec<Vec<u32>> {
        let b = pixels.dims()[0];
        let device = pixels.device();
        let states = EncoderStates::new(self.encode(pixels));
        let mut seqs = vec![vec![start]; b];
        for _ in 0..max_new {
            let t = seqs[0].len();
            let flat: Vec<i64> = seqs.iter().flatten().map(|&i| i64::from(i)).collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), &device);
            let next: Vec<i64> = self
                .decode(&states, ids)
                .narrow(1, t - 1, 1)
                .argmax(2)
                .reshape([b])
                .into_data()
                .try_into_vec_as()
                .expect("ids");
            for (s, n) in seqs.iter_mut().zip(next) {
                s.push(n as u32);
            }
        }
        seqs
    }

    /// Writes the model as a Hugging Face directory at `out`: `source`'s
    /// `config.json` (and `generation_config.json`), and every tensor under
    /// transformers' names; tensors of `source` this model does not hold
    /// (the unused ViT pooler) are carried over as they were.
    pub fn export(&self, source: &Path, out: &Path) -> Result<()> {
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        let enc = TaskModel {
            body: self.encoder.clone(),
            head: NoHead,
        };
        for (k, shape, v) in state::export(&enc, &|_| true) {
            let k = enc.body.export_key(&k);
            let bare = k.strip_prefix(Vit::BASE_PREFIX).unwrap_or(&k);
            tensors.insert(format!("encoder.{bare}"), (shape, v));
        }
        let dec = TaskModel {
            body: self.decoder.clone(),
            head: NoHead,
        };
        for (k, shape, v) in state::export(&dec, &|_| true) {
            tensors.insert(format!("decoder.{}", dec.body.export_key(&k)), (shape, v));
        }
        if let Some(p) = &self.enc_to_dec_proj {
            let (shape, w) = super::params::host(&p.weight.val());
            let w = super::params::transpose(&w, shape[0], shape[1]);
            tensors.insert(
                "enc_to_dec_proj.weight".into(),
                (vec![shape[1], shape[0]], w),
            );
            if let Some(b) = &p.bias {
                let (shape, v) = super::params::host(&b.val());
                tensors.insert("enc_to_dec_proj.bias".into(), (shape, v));
            }
        }
        let original = Checkpoint::open(source)?;
        for (k, t) in &original.tensors {
            tensors
                .entry(k.clone())
                .or_insert_with(|| (t.shape.clone(), t.data.clone()));
        }
        let list: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
            .into_iter()
            .map(|(k, (shape, v))| (k, shape, v))
            .collect();
        crate::hub::write_torch_safetensors(&out.join("model.safetensors"), &list)?;
        crate::fsutil::copy_present(source, out, &["config.json", "generation_config.json"])
    }
}

pub mod layout;

#[cfg(test)]
mod tests;
