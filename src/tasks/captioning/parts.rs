//! The captioner's parts outside the task: the mapper's init (PyTorch's
//! or a pretrained projection's), the language model written back as a
//! Hugging Face directory, and the checks of the two parts.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};

use super::{MapperKind, grid_cells};
use crate::models::TaskModel;
use crate::models::causal::CausalLm;
use crate::models::params::SeededRng;
use crate::models::state;
use crate::tasks::causal_lm::NoHead;

/// PyTorch's `nn.Linear` init, `U(-1/sqrt(in), 1/sqrt(in))` for weight and
/// bias, drawn from `rng`.
pub(super) fn torch_linear(l: Linear, rng: &mut SeededRng) -> Linear {
    let [d_in, d_out] = l.weight.dims();
    let bound = 1.0 / (d_in.max(1) as f64).sqrt();
    let device = l.weight.device();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect()
    };
    let w = draw(d_in * d_out);
    let b = draw(d_out);
    let mut weight = Tensor::<2>::from_data(TensorData::new(w, [d_in, d_out]), &device);
    let mut bias = Tensor::<1>::from_data(TensorData::new(b, [d_out]), &device);
    if l.weight.val().is_require_grad() {
        weight = weight.require_grad();
        bias = bias.require_grad();
    }
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// `linears` with weights and biases `mapping.{i}.*` of the weights file
/// at `path` (PyTorch's `[out, in]` layout), each of the same shape.
pub(super) fn pretrained_linears(linears: Vec<Linear>, path: &Path) -> Result<Vec<Linear>> {
    let c = crate::hub::Checkpoint::open(path)?;
    linears
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let [d_in, d_out] = l.weight.dims();
            let device = l.weight.device();
            let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
                let key = format!("mapping.{i}.{name}");
                let t = c
                    .tensors
                    .get(&key)
                    .with_context(|| format!("{} has no `{key}`", path.display()))?;
                if t.shape != shape {
                    bail!(
                        "{}: `{key}` is {:?}, the mapper's is {shape:?}",
                        path.display(),
                        t.shape
                    );
                }
                Ok(t.data.clone())
            };
            let w = crate::models::params::transpose(&get("weight", &[d_out, d_in])?, d_out, d_in);
            let b = get("bias", &[d_out])?;
            let grad = l.weight.val().is_require_grad();
            let param = |t: Tensor<2>| Param::from_tensor(if grad { t.require_grad() } else { t });
            Ok(Linear {
                weight: param(Tensor::from_data(
                    TensorData::new(w, [d_in, d_out]),
                    &device,
                )),
                bias: Some(Param::from_tensor({
                    let t = Tensor::<1>::from_data(TensorData::new(b, [d_out]), &device);
                    if grad { t.require_grad() } else { t }
                })),
            })
        })
        .collect()
}

/// Whether a module path is a decoder block's cross-attention or the
/// LayerNorm before it (GPT-2's `crossattention`, `ln_cross_attn`).
pub(super) fn is_cross_attention(path: &str) -> bool {
    path.contains("crossattention") || path.contains("ln_cross_attn")
}

/// Where an exported captioner keeps its language model.
pub const DECODER_DIR: &str = "decoder";

/// Writes `decoder` as a Hugging Face causal-LM directory at `out`: the
/// source's `config.json` (else the family's), `model.safetensors` under
/// transformers' keys, and the source's tokenizer files; with `cross`, the
/// config says the blocks cross-attend (`add_cross_attention`).
pub fn write_decoder<D: CausalLm>(
    decoder: D,
    source: &Path,
    out: &Path,
    cross: bool,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let wrapped = TaskModel {
        body: decoder,
        head: NoHead,
    };
    let mut config = match std::fs::read_to_string(source.join("config.json")) {
        Ok(raw) => serde_json::from_str(&raw)
            .with_context(|| format!("{} is not JSON", source.join("config.json").display()))?,
        Err(_) => wrapped.body.hf_config(),
    };
    if let Some(obj) = config.as_object_mut() {
        obj.remove("_name_or_path");
        obj.insert(
            "architectures".into(),
            serde_json::json!([D::hf_class("ForCausalLM")]),
        );
        if cross {
            obj.insert("add_cross_attention".into(), true.into());
        }
    }
    crate::fsutil::write_json_atomic(&out.join("config.json"), &config)?;
    let tensors: Vec<_> = state::export(&wrapped, &|_| true)
        .into_iter()
        .map(|(k, shape, values)| (wrapped.body.export_key(&k), shape, values))
        .collect();
    crate::hub::write_torch_safetensors(&out.join("model.safetensors"), &tensors)?;
    crate::fsutil::copy_present(source, out, &crate::tokenize::TOKENIZER_FILES)
}

/// Checks what the prefix recipe needs of the two parts: without a mapper
/// the image features are the prefix, so their size must be the language
/// model's hidden size.
pub fn check_parts(
    mapper: MapperKind,
    prefix_length: usize,
    features: usize,
    hidden: usize,
    grid: (usize, Option<usize>),
    mapper_layers: usize,
) -> Result<()> {
    let (grid, encoder_grid) = grid;
    if mapper == MapperKind::CrossAttention {
        if grid > 0 && encoder_grid.is_none() {
            bail!(
                "--feature-grid {grid}: this encoder's top is not a feature map; with \
                 --mapper cross-attention a transformer encoder hands on all its tokens, so \
                 use --feature-grid 0"
            );
        }
        return Ok(());
    }
    if prefix_length == 0 {
        bail!("--prefix-length must be at least 1");
    }
    if grid > 0 {
        if encoder_grid.is_none() {
            bail!(
                "--feature-grid {grid}: this encoder's top is a vector, not a feature map \
                 (a transformer, or VGG16 with its fully connected classifier); use \
                 --feature-grid 0"
            );
        }
        if mapper == MapperKind::None {
            bail!(
                "--feature-grid {grid} gives {} cells, which --mapper none cannot pass on \
                 as a prefix; use --mapper mlp or --mapper transformer",
                grid_cells(grid)
            );
        }
    }
    if mapper == MapperKind::Transformer && mapper_layers == 0 {
        bail!("--mapper-layers must be at least 1 with --mapper transformer");
    }
    if mapper == MapperKind::None {
        if features != hidden {
            bail!(
                "the encoder's features have {features} values, but the language model's \
                 embeddings have {hidden}: without a mapper the features are the prefix, so \
                 they must match; use --mapper mlp (a trained mapping network)"
            );
        }
        if prefix_length != 1 {
            bail!(
                "--mapper none makes a one-position prefix (the pooled features): use \
                 --prefix-length 1, or --mapper mlp or transformer for longer prefixes"
            );
        }
    }
    Ok(())
}
