//! Text classification: the label mapping and the metrics.

use std::collections::BTreeSet;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::data::table::Example;

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
            MetricName::Accuracy => self.accuracy,
            MetricName::MacroF1 => self.macro_f1,
            MetricName::Loss => -self.loss,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MetricName {
    Accuracy,
    #[value(name = "macro_f1")]
    MacroF1,
    Loss,
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
}
