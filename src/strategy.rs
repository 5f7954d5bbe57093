//! Tuning strategies: which layer groups train, at which learning rate, and the
//! hyperparameters that are fair to each.
//!
//! Layer groups, bottom to top: `embeddings` (group 0), `encoder.layer.i`
//! (group i + 1), and the head (pooler + classifier, group L + 1).

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Strategy {
    /// Same architecture, published initialisation, no pretrained weight.
    Scratch,
    /// Everything trains.
    Full,
    /// Embeddings and the first N encoder layers frozen.
    Freeze(usize),
    /// Only the head (pooler + classifier) trains: a probe of the frozen features.
    Head,
    /// Everything trains; each group below the top at F times the rate of the one above.
    LrDecay(f64),
    /// ULMFiT-style gradual unfreezing: the head in epoch 1, then one more group
    /// from the top at each epoch.
    Gradual,
    /// Low-rank adapters on the attention/MLP projections train; every
    /// pretrained weight is frozen; a classifier's new head trains too
    /// (PEFT's `modules_to_save`). `lora:R` sets the rank (else `--lora-r`).
    Lora(Option<usize>),
}

/// Hyperparameters a strategy starts from; every one can be overridden.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Defaults {
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub epochs: usize,
}

impl Strategy {
    /// The defaults, and why: a fine-tune takes a small step from weights that
    /// are already good (5e-5, as in BERT's paper); training from scratch needs
    /// larger steps and warmup to get anywhere; a probe trains a few thousand
    /// freshly initialised weights and wants a much higher rate. LoRA trains
    /// small adapters whose B starts at zero, so it takes larger steps than
    /// a full fine-tune: 2e-4 with 6% warmup, PEFT's usual setting for
    /// causal LMs; for classifiers (a freshly initialised head beside the
    /// adapters, as in the head probe) [`Strategy::defaults_for`] gives 1e-3.
    pub fn defaults(&self) -> Defaults {
        let (lr, warmup_ratio) = match self {
            Strategy::Scratch => (1e-4, 0.1),
            Strategy::Full => (5e-5, 0.1),
            Strategy::Freeze(_) => (1e-4, 0.1),
            Strategy::Head => (1e-3, 0.0),
            Strategy::LrDecay(_) => (1e-4, 0.1),
            Strategy::Gradual => (1e-4, 0.0),
            Strategy::Lora(_) => (2e-4, 0.06),
        };
        Defaults {
            lr,
            warmup_ratio,
            weight_decay: 0.01,
            epochs: 3,
        }
    }

    /// [`Strategy::defaults`] for a task: convolutional image classifiers
    /// with BatchNorm take larger AdamW steps than transformers (1e-3 from
    /// scratch, 1e-4 for a full fine-tune, 3e-4 above a frozen prefix).
    pub fn defaults_for(&self, task: &str) -> Defaults {
        let mut d = self.defaults();
        if let Strategy::Lora(_) = self {
            if task
                != <crate::tasks::causal_lm::CausalLanguageModelling as crate::tasks::Task>::NAME
            {
                d.lr = 1e-3;
            }
            return d;
        }
        if task == <crate::tasks::image::ImageClassification as crate::tasks::Task>::NAME {
            d.lr = match self {
                Strategy::Scratch | Strategy::Head => 1e-3,
                Strategy::Full => 1e-4,
                _ => 3e-4,
            };
        }
        d
    }

    pub fn uses_pretrained_weights(&self) -> bool {
        !matches!(self, Strategy::Scratch)
    }

    /// Which of a model's `groups` layer groups (bottom to top; the first
    /// is the embeddings, the last the head) train in `epoch` (0-based).
    pub fn trainable(&self, groups: usize, epoch: usize) -> Vec<bool> {
        match *self {
            Strategy::Scratch | Strategy::Full | Strategy::LrDecay(_) => vec![true; groups],
            // the embeddings and the first N encoder layers
            Strategy::Freeze(n) => (0..groups).map(|g| g > n.min(groups - 2)).collect(),
            Strategy::Head => (0..groups).map(|g| g + 1 == groups).collect(),
            // Epoch 0: the head; epoch k: the head and the top k groups.
            Strategy::Gradual => (0..groups).map(|g| g + epoch + 1 >= groups).collect(),
            // the embeddings carry no adapter; the layers and the top group
            // do (or hold the head): their base weights are frozen
            // parameter by parameter ([`crate::models::TaskModel::train_only_adapters`])
            Strategy::Lora(_) => (0..groups).map(|g| g > 0).collect(),
        }
    }

    /// Learning-rate multiplier of each group (1.0 at the top).
    pub fn lr_scale(&self, groups: usize) -> Vec<f64> {
        match *self {
            Strategy::LrDecay(f) => (0..groups)
                .map(|g| f.powi((groups - 1 - g) as i32))
                .collect(),
            _ => vec![1.0; groups],
        }
    }

    /// Number of frozen groups at the bottom in `epoch` (they form a prefix).
    pub fn frozen_prefix(&self, groups: usize, epoch: usize) -> usize {
        self.trainable(groups, epoch)
            .iter()
            .take_while(|t| !**t)
            .count()
    }

    /// Rejects what does not fit a model of `groups` layer groups (an
    /// embedding group, `groups - 2` layers, a head).
    pub fn check(&self, groups: usize) -> Result<()> {
        let layers = groups.saturating_sub(2);
        if let Strategy::Freeze(n) = self
            && *n > layers
        {
            bail!(
                "freeze:{n} asks for more layers than the model has ({layers}); use 0..={layers}"
            );
        }
        Ok(())
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Strategy::Scratch => write!(f, "scratch"),
            Strategy::Full => write!(f, "full"),
            Strategy::Freeze(n) => write!(f, "freeze:{n}"),
            Strategy::Head => write!(f, "head"),
            Strategy::LrDecay(x) => write!(f, "lr-decay:{x}"),
            Strategy::Gradual => write!(f, "gradual"),
            Strategy::Lora(None) => write!(f, "lora"),
            Strategy::Lora(Some(r)) => write!(f, "lora:{r}"),
        }
    }
}

impl FromStr for Strategy {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        Ok(match s {
            "scratch" => Strategy::Scratch,
            "full" => Strategy::Full,
            // `frozen`: a captioner's part of which no weight trains
            "head" | "frozen" => Strategy::Head,
            "gradual" => Strategy::Gradual,
            "lora" => Strategy::Lora(None),
            _ => {
                if let Some(n) = s.strip_prefix("freeze:") {
                    Strategy::Freeze(n.parse().map_err(|_| {
                        anyhow::anyhow!("`{s}`: freeze:N needs a whole number of layers")
                    })?)
                } else if let Some(r) = s.strip_prefix("lora:") {
                    match r.parse::<usize>() {
                        Ok(r) if r > 0 => Strategy::Lora(Some(r)),
                        _ => bail!("`{s}`: lora:R needs a rank of at least 1, such as lora:8"),
                    }
                } else if let Some(x) = s.strip_prefix("lr-decay:") {
                    let f: f64 = x.parse().map_err(|_| {
                        anyhow::anyhow!("`{s}`: lr-decay:F needs a factor such as 0.9")
                    })?;
                    if !(f > 0.0 && f <= 1.0) {
                        bail!("`{s}`: the decay factor must be in (0, 1]");
                    }
                    Strategy::LrDecay(f)
                } else {
                    bail!(
                        "unknown strategy `{s}`: use scratch, full, freeze:N, head, lr-decay:F, gradual, lora or lora:R"
                    )
                }
            }
        })
    }
}

impl From<Strategy> for String {
    fn from(s: Strategy) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Strategy {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_strategy() {
        for s in [
            "scratch",
            "full",
            "freeze:4",
            "head",
            "lr-decay:0.8",
            "gradual",
            "lora",
            "lora:16",
        ] {
            assert_eq!(s.parse::<Strategy>().unwrap().to_string(), s);
        }
        assert!("freeze:x".parse::<Strategy>().is_err());
        assert!("lr-decay:1.5".parse::<Strategy>().is_err());
        assert!("lora:0".parse::<Strategy>().is_err());
        assert!(
            "adapters"
                .parse::<Strategy>()
                .unwrap_err()
                .to_string()
                .contains("unknown strategy")
        );
    }

    #[test]
    fn trainable_groups() {
        // 6 layers: groups = embeddings, 6 layers, head = 8
        let t = Strategy::Freeze(4).trainable(8, 0);
        assert_eq!(t, vec![false, false, false, false, false, true, true, true]);
        assert_eq!(Strategy::Freeze(4).frozen_prefix(8, 0), 5);
        assert_eq!(Strategy::Freeze(0).frozen_prefix(8, 0), 1);
        assert_eq!(Strategy::Freeze(6).frozen_prefix(8, 0), 7);
        let h = Strategy::Head.trainable(8, 2);
        assert_eq!(h.iter().filter(|x| **x).count(), 1);
        assert!(h[7]);
        assert!(Strategy::Full.trainable(8, 0).iter().all(|x| *x));
        assert_eq!(Strategy::Gradual.frozen_prefix(8, 0), 7);
        assert_eq!(Strategy::Gradual.frozen_prefix(8, 1), 6);
        assert_eq!(Strategy::Gradual.frozen_prefix(8, 7), 0);
        assert_eq!(Strategy::Gradual.frozen_prefix(8, 20), 0);
        assert!(Strategy::Freeze(7).check(8).is_err());
        assert!(Strategy::Freeze(6).check(8).is_ok());
        assert_eq!(
            Strategy::Lora(None).trainable(4, 0),
            vec![false, true, true, true]
        );
        assert_eq!(Strategy::Lora(Some(4)).frozen_prefix(4, 2), 1);
    }

    #[test]
    fn layerwise_decay_scales() {
        let s = Strategy::LrDecay(0.5).lr_scale(4);
        assert_eq!(s, vec![0.125, 0.25, 0.5, 1.0]);
        assert_eq!(Strategy::Full.lr_scale(4), vec![1.0; 4]);
    }

    #[test]
    fn defaults_are_fair_to_each_strategy() {
        assert!(Strategy::Head.defaults().lr > Strategy::Scratch.defaults().lr);
        assert!(Strategy::Scratch.defaults().lr > Strategy::Full.defaults().lr);
        assert!(Strategy::Scratch.defaults().warmup_ratio > 0.0);
        let lora = Strategy::Lora(None);
        assert_eq!(lora.defaults_for("causal-lm").lr, 2e-4);
        assert_eq!(lora.defaults_for("text-classification").lr, 1e-3);
        assert!(lora.defaults().lr > Strategy::Full.defaults().lr);
    }
}
