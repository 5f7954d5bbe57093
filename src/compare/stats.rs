//! Means and 95% confidence intervals over seeds, and the budget syntax.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Mean of a sample with the half-width of its two-sided 95% interval
/// (Student's t with n - 1 degrees of freedom; none for n = 1).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    /// Half-width: the interval is mean ± ci. `None` with one value.
    pub ci: Option<f64>,
    pub n: usize,
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
