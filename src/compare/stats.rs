//! Means and 95% confidence intervals over seeds, and the budget syntax.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::{Plan, RunRecord, Summary, at_least};
use crate::tasks::MetricName;

/// Mean of a sample with the half-width of its two-sided 95% interval
/// (Student's t with n - 1 degrees of freedom; none for n = 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    /// Half-width: the interval is mean ± ci. `None` with one value.
    pub ci: Option<f64>,
    pub n: usize,
}

/// A number that JSON wrote as `null` (serde_json writes NaN so) reads
/// back as NaN.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// No values: a NaN mean (fields absent from older reports).
impl Default for MeanCi {
    fn default() -> Self {
        Self {
            mean: f64::NAN,
            ci: None,
            n: 0,
        }
    }
}

impl MeanCi {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                ci: None,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Self { mean, ci: None, n };
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let ci = t_975(n - 1) * (var / n as f64).sqrt();
        Self {
            mean,
            ci: Some(ci),
            n,
        }
    }

    pub fn lo(&self) -> f64 {
        self.mean - self.ci.unwrap_or(0.0)
    }

    pub fn hi(&self) -> f64 {
        self.mean + self.ci.unwrap_or(0.0)
    }

    /// `0.923 ± 0.012` (or `0.923` alone with one seed), `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        match self.ci {
            Some(ci) => format!("{:.digits$} ± {:.digits$}", self.mean, ci),
            None => format!("{:.digits$}", self.mean),
        }
    }
}

/// The 97.5% quantile of Student's t distribution with `df` degrees of
/// freedom (two-sided 95%), from the standard table; 1.96 beyond 30.
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => 1.96,
    }
}

/// What every strategy of a comparison gets: the same number of epochs,
/// optimizer steps, seconds of wall time or watt-hours of energy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Budget {
    Epochs(usize),
    Steps(usize),
    Seconds(f64),
    WattHours(f64),
}

impl FromStr for Budget {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num.parse().map_err(|_| {
            anyhow::anyhow!(
                "budget `{s}`: expected a number and a unit, like 3ep, 500steps, 10m, 90s, 1h or 5Wh"
            )
        })?;
        if value <= 0.0 || !value.is_finite() {
            bail!("budget `{s}` must be positive");
        }
        let whole = |what: &str| -> Result<usize> {
            if value.fract() != 0.0 {
                bail!("budget `{s}`: {what} must be a whole number");
            }
            Ok(value as usize)
        };
        Ok(match unit.trim() {
            "ep" | "epoch" | "epochs" => Budget::Epochs(whole("epochs")?),
            "step" | "steps" => Budget::Steps(whole("steps")?),
            "s" | "sec" | "secs" => Budget::Seconds(value),
            "m" | "min" | "mins" => Budget::Seconds(value * 60.0),
            "h" | "hour" | "hours" => Budget::Seconds(value * 3600.0),
            "wh" => Budget::WattHours(value),
            "kwh" => Budget::WattHours(value * 1000.0),
            other => bail!(
                "budget `{s}`: unknown unit `{other}`; use ep, steps, s, m, h, Wh or kWh (e.g. 3ep, 500steps, 10m, 5Wh)"
            ),
        })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Epochs(n) => write!(f, "{n}ep"),
            Budget::Steps(n) => write!(f, "{n}steps"),
            Budget::Seconds(s) if s % 60.0 == 0.0 => write!(f, "{}m", s / 60.0),
            Budget::Seconds(s) => write!(f, "{s}s"),
            Budget::WattHours(w) => write!(f, "{w}Wh"),
        }
    }
}

impl From<Budget> for String {
    fn from(b: Budget) -> String {
        b.to_string()
    }
}

impl TryFrom<String> for Budget {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Mean and interval per (size, strategy).
pub fn summarise(
    runs: &[RunRecord],
    strategies: &[Plan],
    sizes: &[Option<usize>],
    metric: MetricName,
    target: Option<f64>,
) -> Vec<Summary> {
    let mut out = Vec::new();
    for &size in sizes {
        for &strategy in strategies {
            let rs: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| r.strategy == strategy && r.train_size == size)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let of = |f: &dyn Fn(&RunRecord) -> f64| {
                MeanCi::of(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let reached: Vec<(f64, f64)> = target
                .map(|t| rs.iter().filter_map(|r| r.to_target(t, metric)).collect())
                .unwrap_or_default();
            let mean =
                |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            out.push(Summary {
                strategy,
                train_size: size,
                train_examples: rs[0].train_examples,
                score: of(&|r| r.score(metric)),
                accuracy: of(&|r| r.test.accuracy()),
                macro_f1: of(&|r| r.test.macro_f1()),
                perplexity: of(&|r| r.test.perplexity()),
                bleu4: of(&|r| r.test.value(MetricName::Bleu4)),
                cider: of(&|r| r.test.value(MetricName::Cider)),
                seconds: of(&|r| r.cost.seconds),
                flops: of(&|r| r.cost.flops_total),
                energy_wh: of(&|r| r.cost.energy.kwh * 1000.0),
                co2_g: of(&|r| r.cost.co2_kg * 1000.0),
                money: of(&|r| r.cost.money.total),
                mfu: of(&|r| r.cost.mfu),
                energy_measured: rs.iter().all(|r| r.cost.energy.measured),
                reached_target: reached.len(),
                seconds_to_target: mean(reached.iter().map(|r| r.0).collect()),
                wh_to_target: mean(reached.iter().map(|r| r.1).collect()),
                cache_saved_seconds: rs.iter().map(|r| r.cost.cache_saved_seconds).sum::<f64>()
                    / rs.len() as f64,
                cache_saved_wh: rs.iter().map(|r| r.cost.cache_saved_wh).sum::<f64>()
                    / rs.len() as f64,
            });
        }
    }
    out
}

/// How many times more data `scratch` needed to match the best tuned
/// strategy at the smallest size: `Ok(multiplier)`, or `Err(best scratch
/// score)` when it never did within the sizes tried. `None` without a
/// sweep or without scratch.
pub fn data_multiplier(
    summary: &[Summary],
    metric: MetricName,
) -> Option<(Plan, usize, Result<f64, f64>)> {
    let better = |a: f64, b: f64| {
        if metric.higher_is_better() {
            a.total_cmp(&b)
        } else {
            b.total_cmp(&a)
        }
    };
    let mut sizes: Vec<usize> = summary.iter().filter_map(|s| s.train_size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let smallest = *sizes.first()?;
    if sizes.len() < 2 {
        return None;
    }
    let tuned = summary
        .iter()
        .filter(|s| s.train_size == Some(smallest) && !s.strategy.is_scratch())
        .max_by(|a, b| better(a.score.mean, b.score.mean))?;
    let mut scratch: Vec<&Summary> = summary
        .iter()
        .filter(|s| s.strategy.is_scratch() && s.train_size.is_some())
        .collect();
    if scratch.is_empty() {
        return None;
    }
    scratch.sort_by_key(|s| s.train_size);
    let result = match scratch
        .iter()
        .find(|s| at_least(s.score.mean, tuned.score.mean, metric))
    {
        Some(s) => Ok(s.train_size.unwrap() as f64 / smallest as f64),
        None => Err(scratch
            .iter()
            .map(|s| s.score.mean)
            .max_by(|a, b| better(*a, *b))
            .unwrap_or(f64::NAN)),
    };
    Some((tuned.strategy, smallest, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_interval_by_hand() {
        // 0.90, 0.92, 0.94: mean 0.92, s = 0.02, se = 0.02/sqrt(3), t(2) = 4.303
        let m = MeanCi::of(&[0.90, 0.92, 0.94]);
        assert!((m.mean - 0.92).abs() < 1e-12);
        let want = 4.303 * 0.02 / 3f64.sqrt();
        assert!((m.ci.unwrap() - want).abs() < 1e-12, "{:?}", m.ci);
        assert_eq!(m.show(3), "0.920 ± 0.050");
        let one = MeanCi::of(&[0.5]);
        assert_eq!((one.ci, one.show(2)), (None, "0.50".to_string()));
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(100), 1.96);
    }

    #[test]
    fn budgets_parse_and_print() {
        assert_eq!("3ep".parse::<Budget>().unwrap(), Budget::Epochs(3));
        assert_eq!("500steps".parse::<Budget>().unwrap(), Budget::Steps(500));
        assert_eq!("10m".parse::<Budget>().unwrap(), Budget::Seconds(600.0));
        assert_eq!("90s".parse::<Budget>().unwrap(), Budget::Seconds(90.0));
        assert_eq!("5Wh".parse::<Budget>().unwrap(), Budget::WattHours(5.0));
        assert_eq!(
            "0.5kWh".parse::<Budget>().unwrap(),
            Budget::WattHours(500.0)
        );
        for b in ["3ep", "500steps", "10m", "90s", "5Wh"] {
            assert_eq!(b.parse::<Budget>().unwrap().to_string(), b);
        }
        let e = "3 parsecs".parse::<Budget>().unwrap_err().to_string();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        assert!("1.5ep".parse::<Budget>().is_err());
        assert!("ep".parse::<Budget>().is_err());
        assert!("0m".parse::<Budget>().is_err());
    }
}
