//! Text classification: the label mapping, the head (dropout and a linear
//! layer on what the body pools), cross-entropy, and the metrics.

use crate::kernels::matmul::LinearExt;
use std::collections::BTreeSet;

use crate::kernels::dropout::DropoutExt;
use anyhow::{Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use super::MetricName;
use super::Task;
use crate::data::table::Example;
use crate::models::params::host;
use crate::models::{Architecture, Flow};
use crate::tokenize::{Encoded, TextTokenizer, pad_batch};
use crate::train::cache::KeyHasher;

/// Label names in id order. Stored with the model (config.json id2label).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMap {
    pub labels: Vec<String>,
}

impl LabelMap {
    /// Sorted label names found in the data; numerically when all are integers
    /// (so 0, 1, 2, 10 and not 0, 1, 10, 2).
    pub fn from_examples(examples: &[Example]) -> Result<Self> {
        let set: BTreeSet<&str> = examples.iter().map(|e| e.label.as_str()).collect();
        let mut labels: Vec<String> = set.into_iter().map(str::to_string).collect();
        if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
            labels.sort_by_key(|l| l.parse::<i64>().unwrap_or(0));
        }
        if labels.len() < 2 {
            bail!(
                "the training data has {} distinct label(s) ({}); a classifier needs at least 2",
                labels.len(),
                labels.join(", ")
            );
        }
        Ok(Self { labels })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn id(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// Ids of every example; an unknown label is an error naming file line.
    pub fn ids(&self, examples: &[Example], file: &str) -> Result<Vec<usize>> {
        examples
            .iter()
            .map(|e| {
                self.id(&e.label).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{file} line {}: label `{}` is not one the model knows ({})",
                        e.line,
                        e.label,
                        self.labels.join(", ")
                    )
                })
            })
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub loss: f64,
    pub examples: usize,
    pub per_class: Vec<ClassMetrics>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<usize>>,
}

impl Metrics {
    /// From true and predicted ids and the summed loss.
    pub fn compute(labels: &LabelMap, truth: &[usize], predicted: &[usize], loss_sum: f64) -> Self {
        let k = labels.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t][p] += 1;
        }
        let n = truth.len();
        let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
        let per_class: Vec<ClassMetrics> = (0..k)
            .map(|i| {
                let tp = confusion[i][i] as f64;
                let predicted_i: usize = (0..k).map(|t| confusion[t][i]).sum();
                let support: usize = confusion[i].iter().sum();
                let precision = if predicted_i > 0 {
                    tp / predicted_i as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    tp / support as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    label: labels.labels[i].clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let macro_f1 = per_class.iter().map(|c| c.f1).sum::<f64>() / k.max(1) as f64;
        Self {
            accuracy: if n > 0 {
                correct as f64 / n as f64
            } else {
                0.0
            },
            macro_f1,
            loss: if n > 0 { loss_sum / n as f64 } else { 0.0 },
            examples: n,
            per_class,
            confusion,
        }
    }

    /// The value of a named metric, oriented so that larger is better.
    pub fn score(&self, metric: MetricName) -> f64 {
        match metric {
            // BLEU and CIDEr are refused for classification (`TrainConfig::check`)
            MetricName::Accuracy | MetricName::Bleu4 | MetricName::Cider => self.accuracy,
            MetricName::MacroF1 => self.macro_f1,
            MetricName::Loss | MetricName::Perplexity => -self.loss,
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "accuracy {:.4}  macro-F1 {:.4}  loss {:.4}  ({} examples)\n",
            self.accuracy, self.macro_f1, self.loss, self.examples
        );
        s.push_str("  label             precision  recall     f1  support\n");
        for c in &self.per_class {
            s.push_str(&format!(
                "  {:<16} {:>9.4} {:>7.4} {:>6.4} {:>8}\n",
                c.label, c.precision, c.recall, c.f1, c.support
            ));
        }
        s.push_str("  confusion (rows: true, columns: predicted)\n");
        for (i, row) in self.confusion.iter().enumerate() {
            s.push_str(&format!(
                "  {:<16} {}\n",
                self.per_class[i].label,
                row.iter()
                    .map(|v| format!("{v:>7}"))
                    .collect::<Vec<_>>()
                    .join("")
            ));
        }
        s
    }
}

impl LabelMap {
    /// A dropout + linear head over `body`'s features with one logit per
    /// label, parameters zero until loaded or initialised.
    pub fn new_head<A: Architecture>(&self, body: &A, device: &Device) -> ClassificationHead {
        let (d, k) = (body.feature_size(), self.len());
        ClassificationHead {
            dropout: DropoutConfig::new(body.head_dropout()).init(),
            classifier: Linear {
                weight: Param::from_tensor(Tensor::zeros([d, k], device)),
                bias: Some(Param::from_tensor(Tensor::zeros([k], device))),
            },
        }
    }

    /// Forward FLOPs of that head on `batch` examples.
    pub fn head_flops<A: Architecture>(&self, body: &A, batch: usize) -> f64 {
        2.0 * batch as f64 * body.feature_size() as f64 * self.len() as f64
    }

    /// Metrics of a split from its true ids and its examples' logits.
    pub fn metrics(&self, truth: &[usize], outputs: &[Vec<f32>]) -> Metrics {
        let predicted: Vec<usize> = outputs.iter().map(|l| argmax(l)).collect();
        let loss: f64 = outputs.iter().zip(truth).map(|(l, &y)| nll(l, y)).sum();
        Metrics::compute(self, truth, &predicted, loss)
    }

    /// `id2label` and `label2id`, as transformers writes them in config.json.
    pub fn export_config(&self, obj: &mut serde_json::Map<String, serde_json::Value>) {
        let id2label: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), serde_json::json!(i)))
            .collect();
        obj.insert("id2label".into(), id2label.into());
        obj.insert("label2id".into(), label2id.into());
    }
}

/// The label ids of examples `idx` as a targets tensor.
pub fn label_targets(ids: &[usize], idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let y: Vec<i64> = idx.iter().map(|&i| ids[i] as i64).collect();
    let n = y.len();
    Tensor::from_data(TensorData::new(y, [n]), device)
}

/// transformers' classification head: dropout, then a linear layer to one
/// logit per label (`classifier.weight`, `classifier.bias` in checkpoints).
#[derive(Module, Debug)]
pub struct ClassificationHead {
    pub dropout: Dropout,
    pub classifier: Linear,
}

impl ClassificationHead {
    /// Logits `[batch, labels]` from pooled features `[batch, features]`.
    pub fn forward(&self, features: Flow) -> Tensor<2> {
        match features {
            Flow::Pooled(x) => self.classifier.apply(self.dropout.apply(x)),
            other => panic!("a classification head reads pooled features, not {other:?}"),
        }
    }

    /// Each example's logits (host copies).
    pub fn logit_rows(&self, features: Flow) -> Vec<Vec<f32>> {
        let (shape, values) = host(&self.forward(features));
        values
            .chunks(shape[1].max(1))
            .map(<[f32]>::to_vec)
            .collect()
    }
}

/// Tokenised texts with their label ids.
pub struct TextSplit {
    pub items: Vec<Encoded>,
    pub labels: Vec<usize>,
}

/// Single-label text classification over `labels`.
pub struct TextClassification {
    pub labels: LabelMap,
    pub pad_id: u32,
}

impl TextClassification {
    /// Tokenises labelled examples; an unknown label is an error naming its line.
    pub fn split(
        &self,
        tokenizer: &mut TextTokenizer,
        examples: &[Example],
        file: &str,
        max_length: usize,
    ) -> Result<TextSplit> {
        let labels = self.labels.ids(examples, file)?;
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let items = tokenizer.encode_each(&texts, max_length)?;
        Ok(TextSplit { items, labels })
    }
}

impl Task for TextClassification {
    const NAME: &'static str = "text-classification";
    const HF_SUFFIX: &'static str = "ForSequenceClassification";
    type Head = ClassificationHead;
    type Split = TextSplit;
    type Targets = Tensor<1, Int>;
    type Metrics = Metrics;

    fn new_head<A: Architecture>(&self, body: &A, device: &Device) -> ClassificationHead {
        self.labels.new_head(body, device)
    }

    fn lengths(split: &TextSplit) -> Vec<usize> {
        split.items.iter().map(|e| e.ids.len()).collect()
    }

    fn input(&self, split: &TextSplit, idx: &[usize], device: &Device) -> Flow {
        let items: Vec<&Encoded> = idx.iter().map(|&i| &split.items[i]).collect();
        crate::models::bert::BertInput::from_batch(&pad_batch(&items, self.pad_id), device).flow()
    }

    fn targets(&self, split: &TextSplit, idx: &[usize], device: &Device) -> Tensor<1, Int> {
        label_targets(&split.labels, idx, device)
    }

    fn hash_inputs(&self, split: &TextSplit, key: &mut KeyHasher) {
        let examples: Vec<(&[u32], &[u32])> = split
            .items
            .iter()
            .map(|e| (e.ids.as_slice(), e.type_ids.as_slice()))
            .collect();
        key.examples(&examples);
    }

    fn loss(
        &self,
        head: &ClassificationHead,
        features: Flow,
        targets: Tensor<1, Int>,
    ) -> Tensor<1> {
        cross_entropy(head.forward(features), targets)
    }

    fn outputs(
        &self,
        head: &ClassificationHead,
        features: Flow,
        _split: &TextSplit,
        _idx: &[usize],
    ) -> Vec<Vec<f32>> {
        head.logit_rows(features)
    }

    fn metrics(&self, split: &TextSplit, outputs: &[Vec<f32>]) -> Metrics {
        self.labels.metrics(&split.labels, outputs)
    }

    fn score(m: &Metrics, name: MetricName) -> f64 {
        m.score(name)
    }

    fn loss_of(m: &Metrics) -> f64 {
        m.loss
    }

    fn describe(m: &Metrics) -> String {
        format!(
            "accuracy {:.4}, macro-F1 {:.4}, loss {:.4}",
            m.accuracy, m.macro_f1, m.loss
        )
    }

    fn head_flops<A: Architecture>(&self, body: &A, batch: usize) -> f64 {
        self.labels.head_flops(body, batch)
    }

    fn export_config(&self, obj: &mut serde_json::Map<String, serde_json::Value>) -> Result<()> {
        self.labels.export_config(obj);
        obj.insert(
            "problem_type".into(),
            serde_json::json!("single_label_classification"),
        );
        Ok(())
    }
}

/// Label names in id order from `config.json`'s `id2label`.
pub fn labels_from_config(raw: &serde_json::Value, file: &str) -> Result<LabelMap> {
    let id2label = raw
        .get("id2label")
        .and_then(|v| v.as_object())
        .ok_or_else(|| anyhow::anyhow!("{file} has no id2label: not a trained classifier"))?;
    let mut pairs: Vec<(usize, String)> = id2label
        .iter()
        .map(|(k, v)| {
            let id = k
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("{file}: id2label key `{k}` is not an integer"))?;
            Ok((id, v.as_str().unwrap_or_default().to_string()))
        })
        .collect::<Result<_>>()?;
    pairs.sort();
    Ok(LabelMap {
        labels: pairs.into_iter().map(|(_, l)| l).collect(),
    })
}

/// Mean negative log-likelihood of the targets.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, targets.reshape([batch, 1])).neg().mean()
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// -log softmax(logits)[target], computed stably in f64.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    lse - logits[target] as f64
}

pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(label: &str) -> Example {
        Example {
            text: "t".into(),
            label: label.into(),
            line: 1,
        }
    }

    #[test]
    fn integer_labels_sort_numerically() {
        let m = LabelMap::from_examples(&[ex("10"), ex("2"), ex("1")]).unwrap();
        assert_eq!(m.labels, vec!["1", "2", "10"]);
        let m = LabelMap::from_examples(&[ex("normal"), ex("abnormal")]).unwrap();
        assert_eq!(m.labels, vec!["abnormal", "normal"]);
        assert!(LabelMap::from_examples(&[ex("a"), ex("a")]).is_err());
        let err = m.ids(&[ex("other")], "val.csv").unwrap_err().to_string();
        assert!(err.contains("val.csv line 1: label `other`"), "{err}");
    }

    #[test]
    fn metrics_by_hand() {
        let labels = LabelMap {
            labels: vec!["a".into(), "b".into()],
        };
        // truth a a a b, predicted a b a b: confusion [[2,1],[0,1]]
        let m = Metrics::compute(&labels, &[0, 0, 0, 1], &[0, 1, 0, 1], 2.0);
        assert_eq!(m.confusion, vec![vec![2, 1], vec![0, 1]]);
        assert_eq!(m.accuracy, 0.75);
        assert_eq!(m.loss, 0.5);
        // a: p 1, r 2/3, f1 0.8; b: p 0.5, r 1, f1 2/3
        assert!((m.per_class[0].f1 - 0.8).abs() < 1e-12);
        assert!((m.per_class[1].precision - 0.5).abs() < 1e-12);
        assert!((m.macro_f1 - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(m.score(MetricName::Loss), -0.5);
    }

    #[test]
    fn softmax_and_nll_agree() {
        let l = [1.0f32, 2.0, 0.5];
        let p = softmax(&l);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((nll(&l, 1) + p[1].ln()).abs() < 1e-9);
        assert_eq!(argmax(&l), 1);
    }
}
