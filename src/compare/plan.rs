//! What one row of a comparison trains: a strategy, or for captioning a
//! pair `ENCODER+DECODER` of strategies (`frozen+lora`: the image encoder
//! frozen, the language model tuned through LoRA adapters).

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::strategy::Strategy;

/// A strategy, with the language model's for captioning.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Plan {
    /// The model's (for captioning, the image encoder's).
    pub strategy: Strategy,
    /// Captioning: the language model's.
    pub decoder: Option<Strategy>,
}

impl From<Strategy> for Plan {
    fn from(strategy: Strategy) -> Self {
        Self {
            strategy,
            decoder: None,
        }
    }
}

impl Plan {
    /// Nothing pretrained: every part from scratch.
    pub fn is_scratch(&self) -> bool {
        self.strategy == Strategy::Scratch && self.decoder.is_none_or(|d| d == Strategy::Scratch)
    }
}

/// A part's strategy as a captioning pair names it (`frozen`, not `head`).
fn part(s: Strategy) -> String {
    match s {
        Strategy::Head => "frozen".to_string(),
        s => s.to_string(),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decoder {
            None => write!(f, "{}", self.strategy),
            Some(d) => write!(f, "{}+{}", part(self.strategy), part(d)),
        }
    }
}

impl FromStr for Plan {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.split_once('+') {
            None => Ok(s.parse::<Strategy>()?.into()),
            Some((a, b)) => {
                if b.contains('+') {
                    bail!("`{s}`: a pair is ENCODER+DECODER, such as frozen+lora");
                }
                Ok(Self {
                    strategy: a.trim().parse()?,
                    decoder: Some(b.trim().parse()?),
                })
            }
        }
    }
}

impl From<Plan> for String {
    fn from(p: Plan) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Plan {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_single_strategies_read_back_as_written() {
        for s in [
            "full",
            "freeze:3",
            "frozen+lora",
            "scratch+scratch",
            "full+lora:4",
        ] {
            let p: Plan = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), p);
        }
        // a single `frozen` is the head strategy, written as such
        assert_eq!("frozen".parse::<Plan>().unwrap().to_string(), "head");
        let p: Plan = "frozen+full".parse().unwrap();
        assert_eq!(
            (p.strategy, p.decoder),
            (Strategy::Head, Some(Strategy::Full))
        );
        assert!("a+b".parse::<Plan>().is_err());
        assert!("full+full+full".parse::<Plan>().is_err());
        assert!("scratch+scratch".parse::<Plan>().unwrap().is_scratch());
        assert!(Plan::from(Strategy::Scratch).is_scratch());
        assert!(!"scratch+lora".parse::<Plan>().unwrap().is_scratch());
    }
}
