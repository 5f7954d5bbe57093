//! Sentence embeddings with the pooling a model's sentence-transformers files
//! specify (`modules.json`, `1_Pooling/config.json`, `2_Normalize`).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, Tensor};
use serde_json::Value;

use crate::models::Architecture;
use crate::models::bert::{Bert, BertInput};
use crate::models::params::{LoadReport, host};
use crate::tokenize::TextTokenizer;

/// sentence-transformers' pooling modes; several may be on, and their outputs
/// are concatenated in the order cls, max, mean, mean_sqrt_len.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pooling {
    pub cls: bool,
    pub max: bool,
    pub mean: bool,
    pub mean_sqrt_len: bool,
}

impl Pooling {
    pub const MEAN: Pooling = Pooling {
        cls: false,
        max: false,
        mean: true,
        mean_sqrt_len: false,
    };

    pub fn describe(&self) -> String {
        let mut names = Vec::new();
        for (on, name) in [
            (self.cls, "cls"),
            (self.max, "max"),
            (self.mean, "mean"),
            (self.mean_sqrt_len, "mean_sqrt_len"),
        ] {
            if on {
                names.push(name);
            }
        }
        names.join("+")
    }
}

/// What the model directory's sentence-transformers files say.
#[derive(Clone, Debug, PartialEq)]
pub struct SentenceSpec {
    pub pooling: Pooling,
    /// True when the pooling came from the files, false when defaulted to mean.
    pub pooling_from_files: bool,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
}

impl SentenceSpec {
    pub fn read(dir: &Path) -> Result<Self> {
        let read = |p: &Path| -> Result<Option<Value>> {
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not valid JSON", p.display())
            })?))
        };
        let modules = read(&dir.join("modules.json"))?;
        let mut pooling_dir = None;
        let mut normalize = false;
        if let Some(Value::Array(mods)) = &modules {
            for m in mods {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                let path = m.get("path").and_then(Value::as_str).unwrap_or("");
                if kind.ends_with(".Pooling") {
                    pooling_dir = Some(dir.join(path));
                } else if kind.ends_with(".Normalize") {
                    normalize = true;
                }
            }
        }
        let pooling_config = match &pooling_dir {
            Some(p) => read(&p.join("config.json"))?,
            None => read(&dir.join("1_Pooling").join("config.json"))?,
        };
        let (pooling, pooling_from_files) = match pooling_config {
            Some(cfg) => {
                let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
                let p = Pooling {
                    cls: flag("pooling_mode_cls_token"),
                    max: flag("pooling_mode_max_tokens"),
                    mean: flag("pooling_mode_mean_tokens"),
                    mean_sqrt_len: flag("pooling_mode_mean_sqrt_len_tokens"),
                };
                if p == (Pooling {
                    mean: false,
                    ..Pooling::MEAN
                }) {
                    bail!(
                        "the pooling config in {} turns on no mode this tool supports \
                         (cls, max, mean, mean_sqrt_len)",
                        dir.display()
                    );
                }
                (p, true)
            }
            None => (Pooling::MEAN, false),
        };
        let max_seq_length = read(&dir.join("sentence_bert_config.json"))?
            .and_then(|v| v.get("max_seq_length")?.as_u64())
            .map(|n| n as usize);
        Ok(Self {
            pooling,
            pooling_from_files,
            normalize,
            max_seq_length,
        })
    }
}

/// A BERT encoder, its tokenizer and its pooling.
pub struct SentenceEncoder {
    pub model: Bert,
    pub tokenizer: TextTokenizer,
    pub spec: SentenceSpec,
    pub max_length: usize,
    pub report: LoadReport,
    device: Device,
}

impl SentenceEncoder {
    /// `max_length` None: the sentence-transformers max_seq_length, else the
    /// tokenizer's model_max_length, capped by max_position_embeddings.
    pub fn load(dir: &Path, device: &Device, max_length: Option<usize>) -> Result<Self> {
        let (model, report) = Bert::from_pretrained(dir, device)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let spec = SentenceSpec::read(dir)?;
        let limit = model.max_positions();
        let max_length = match max_length {
            Some(n) if n > limit => {
                bail!("--max-length {n} exceeds the model's max_position_embeddings ({limit})")
            }
            Some(n) => n,
            None => spec
                .max_seq_length
                .or(tokenizer.model_max_length)
                .unwrap_or(limit)
                .min(limit),
        };
        Ok(Self {
            model,
            tokenizer,
            spec,
            max_length,
            report,
            device: device.clone(),
        })
    }

    /// Embeddings of `texts`, in order. Texts are batched by length to save
    /// padding work; the result does not depend on the batching.
    pub fn encode(
        &mut self,
        texts: &[String],
        batch_size: usize,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let batch_texts: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let vectors = self.encode_batch(&batch_texts, normalize)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn encode_batch(&mut self, texts: &[&str], normalize: bool) -> Result<Vec<Vec<f32>>> {
        let b = self.tokenizer.encode_batch(texts, self.max_length)?;
        let input = BertInput::from_batch(&b, &self.device);
        let hidden = self.model.forward(&input);
        let pooled = pool(hidden, input.attention_mask, &self.spec.pooling);
        let (shape, values) = host(&pooled);
        let dim = shape[1];
        let mut vectors: Vec<Vec<f32>> = values.chunks(dim).map(|c| c.to_vec()).collect();
        if normalize || self.spec.normalize {
            for v in &mut vectors {
                l2_normalize(v);
            }
        }
        Ok(vectors)
    }
}

/// Pools `[batch, seq, hidden]` states over the unmasked tokens into
/// `[batch, k * hidden]` (k = number of modes on).
pub fn pool(hidden: Tensor<3>, mask: Tensor<2>, pooling: &Pooling) -> Tensor<2> {
    let [batch, seq, h] = hidden.dims();
    let mask3 = mask.reshape([batch, seq, 1]);
    let count = mask3.clone().sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    let mut parts = Vec::new();
    if pooling.cls {
        parts.push(hidden.clone().narrow(1, 0, 1).reshape([batch, h]));
    }
    if pooling.max {
        // Padding set far below any real value so it never wins the max.
        let masked = hidden.clone() + (mask3.clone().neg() + 1.0) * -1.0e9;
        parts.push(masked.max_dim(1).reshape([batch, h]));
    }
    if pooling.mean || pooling.mean_sqrt_len {
        let sum = (hidden * mask3).sum_dim(1).reshape([batch, h]);
        if pooling.mean {
            parts.push(sum.clone() / count.clone());
        }
        if pooling.mean_sqrt_len {
            parts.push(sum / count.sqrt());
        }
    }
    Tensor::cat(parts, 1)
}

pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn pooling_ignores_padding() {
        let device = Device::default();
        // batch 1, seq 3, hidden 2; last token is padding.
        let hidden = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, -4.0, 100.0, 100.0], [1, 3, 2]),
            &device,
        );
        let mask = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [1, 3]), &device);
        let all = Pooling {
            cls: true,
            max: true,
            mean: true,
            mean_sqrt_len: true,
        };
        let (_, v) = host(&pool(hidden, mask, &all));
        let s = 2f32.sqrt();
        let expected = [1.0, 2.0, 3.0, 2.0, 2.0, -1.0, 4.0 / s, -2.0 / s];
        for (a, b) in v.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn spec_reads_modules_and_pooling_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"type":"sentence_transformers.models.Transformer","path":""},
                {"type":"sentence_transformers.models.Pooling","path":"1_Pooling"},
                {"type":"sentence_transformers.models.Normalize","path":"2_Normalize"}]"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sentence_bert_config.json"),
            r#"{"max_seq_length": 200}"#,
        )
        .unwrap();
        let spec = SentenceSpec::read(dir.path()).unwrap();
        assert!(spec.pooling.cls && !spec.pooling.mean);
        assert!(spec.normalize && spec.pooling_from_files);
        assert_eq!(spec.max_seq_length, Some(200));

        let empty = tempfile::tempdir().unwrap();
        let spec = SentenceSpec::read(empty.path()).unwrap();
        assert_eq!(spec.pooling, Pooling::MEAN);
        assert!(!spec.pooling_from_files && !spec.normalize);
    }

    #[test]
    fn l2_normalize_gives_unit_norm() {
        let mut v = vec![3.0f32, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
    }
}
