//! Tick positions and compact tick labels, and `Axis`, the plotters
//! coordinate built from them.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;

/// Widens an empty or degenerate range so that it can be drawn.
fn pad_range(lo: f64, hi: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let mag = lo.abs().max(hi.abs());
    if hi - lo > mag * 1e-9 {
        (lo, hi)
    } else if mag == 0.0 {
        (0.0, 1.0)
    } else {
        (lo - mag * 0.1, hi + mag * 0.1)
    }
}

/// Number of decimals that shows every multiple of `step` exactly.
fn decimals_for(step: f64) -> usize {
    if !(step > 0.0 && step.is_finite()) {
        return 0;
    }
    (-step.log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize
}

/// Linear ticks at multiples of 1, 2 or 5 x 10^k covering `[lo, hi]` in about
/// `target` steps; returns the step and the ticks (the first and last ticks
/// are the axis ends).
pub(super) fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, Vec<f64>) {
    let (lo, hi) = pad_range(lo, hi);
    let rough = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(rough.log10().floor());
    let m = [(1.5, 1.0), (3.0, 2.0), (7.0, 5.0)]
        .iter()
        .find(|(limit, _)| rough / mag < *limit)
        .map_or(10.0, |&(_, m)| m);
    let step = m * mag;
    let (i0, i1) = ((lo / step + 1e-9).floor(), (hi / step - 1e-9).ceil());
    if !(step > 0.0 && (i1 - i0).is_finite() && i1 - i0 <= 200.0) {
        return (hi - lo, vec![lo, hi]);
    }
    let p = 10f64.powi(decimals_for(step) as i32);
    // Rounded to the step's precision, so 0.1 * 3 shows as 0.3.
    let round = |v: f64| {
        let r = (v * p).round() / p;
        if v.abs() < step * 1e-6 {
            0.0
        } else if r.is_finite() {
            r
        } else {
            v
        }
    };
    let n = (i1 - i0).max(1.0) as i64;
    (
        step,
        (0..=n).map(|k| round((i0 + k as f64) * step)).collect(),
    )
}

/// Largest 1/2/5 x 10^k not above `v` (`up == false`) or smallest not below.
fn snap125(v: f64, up: bool) -> f64 {
    let base = 10f64.powf(v.log10().floor());
    let m = v / base;
    let s = if up {
        [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .find(|&s| s >= m * (1.0 - 1e-9))
    } else {
        [10.0, 5.0, 2.0, 1.0]
            .into_iter()
            .find(|&s| s <= m * (1.0 + 1e-9))
    };
    s.unwrap_or(if up { 10.0 } else { 1.0 }) * base
}

/// Log10 ticks: the axis range snapped to 1/2/5 x 10^k, ticks at decades plus
/// 2 and 5 (decades only beyond four decades, every n-th decade beyond ten).
/// Returns the axis ends and the ticks.
pub(super) fn log_ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
    if !(lo > 0.0 && hi.is_finite()) {
        return (1.0, 10.0, vec![1.0, 10.0]);
    }
    if hi <= lo * (1.0 + 1e-9) {
        (lo, hi) = (lo / 2.0, hi * 2.0);
    }
    let (lo, hi) = (snap125(lo, false), snap125(hi, true));
    let span = hi.log10() - lo.log10();
    let mults: &[f64] = if span > 4.0 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let every = if span > 10.0 {
        (span / 8.0).ceil() as i32
    } else {
        1
    };
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let ticks = (e0..=e1)
        .filter(|e| (e - e0) % every == 0)
        .flat_map(|e| mults.iter().map(move |m| m * 10f64.powi(e)))
        .filter(|&t| t >= lo * (1.0 - 1e-9) && t <= hi * (1.0 + 1e-9))
        .collect();
    (lo, hi, ticks)
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Scientific notation with at most three significant digits: `3e-5`.
fn fmt_sci(v: f64) -> String {
    let mut e = v.abs().log10().floor();
    let mut m = ((v / 10f64.powf(e)) * 100.0).round() / 100.0;
    if m.abs() >= 10.0 {
        (m, e) = (m / 10.0, e + 1.0);
    }
    format!("{}e{}", trim_zeros(format!("{m:.2}")), e as i64)
}

/// Decimals that give `v` three significant digits.
fn sig_decimals(v: f64) -> usize {
    (2 - v.abs().log10().floor() as i32).clamp(0, 12) as usize
}

/// `1.2k`, `3M`: decimals from `step` if given, else three significant digits.
fn fmt_suffix(v: f64, step: Option<f64>) -> String {
    let (div, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(d, _)| v.abs() >= *d)
        .unwrap_or((1e3, "k"));
    let d = step.map_or(sig_decimals(v / div), |s| decimals_for(s / div));
    format!("{}{suffix}", trim_zeros(format!("{:.*}", d, v / div)))
}

/// A tick label for `v` on an axis with tick spacing `step` whose largest
/// tick magnitude is `max_abs`. The style follows the axis, so neighbouring
/// labels match: `1000` next to `800`, but `10k` next to `5k`; `3e-5` only
/// when the whole axis is that small.
pub(super) fn fmt_tick(v: f64, step: f64, max_abs: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a < step.abs() * 1e-6 {
        "0".to_string()
    } else if a >= 1e15 || max_abs < 1e-3 || decimals_for(step) > 6 {
        fmt_sci(v)
    } else if a >= 1e3 && max_abs >= 1e4 {
        fmt_suffix(v, Some(step))
    } else {
        format!("{:.*}", decimals_for(step), v)
    }
}

/// A compact label for an arbitrary value: three significant digits.
pub(super) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".to_string()
    } else if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e15).contains(&a) {
        fmt_sci(v)
    } else if a >= 1e3 {
        fmt_suffix(v, None)
    } else {
        trim_zeros(format!("{:.*}", sig_decimals(v), v))
    }
}

/// An axis: its ends and ticks, in drawing units (log10 of the value on a
/// log axis, so plotters draws it as a linear axis).
#[derive(Clone)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) log: bool,
    pub(super) ticks: Vec<(f64, String)>,
}

impl Axis {
    pub(super) fn linear(range: Option<(f64, f64)>, target: usize) -> Axis {
        let (lo, hi) = range.unwrap_or((0.0, 1.0));
        let (step, values) = nice_ticks(lo, hi, target);
        let (lo, hi) = (values[0], values[values.len() - 1]);
        let max_abs = lo.abs().max(hi.abs());
        let ticks = values
            .iter()
            .map(|&v| (v, fmt_tick(v, step, max_abs)))
            .collect();
        Axis {
            lo,
            hi,
            log: false,
            ticks,
        }
    }

    pub(super) fn log10(range: Option<(f64, f64)>) -> Axis {
        let (lo, hi) = range.unwrap_or((1.0, 10.0));
        let (lo, hi, values) = log_ticks(lo, hi);
        let ticks = values.iter().map(|&v| (v.log10(), fmt_num(v))).collect();
        Axis {
            lo: lo.log10(),
            hi: hi.log10(),
            log: true,
            ticks,
        }
    }

    /// A value in drawing units.
    pub(super) fn at(&self, v: f64) -> f64 {
        if self.log { v.log10() } else { v }
    }

    /// The label of the tick nearest `v` (plotters asks at the ticks).
    pub(super) fn label(&self, v: f64) -> String {
        let d = |t: &&(f64, String)| (t.0 - v).abs();
        let nearest = self.ticks.iter().min_by(|a, b| d(a).total_cmp(&d(b)));
        nearest.map(|t| t.1.clone()).unwrap_or_default()
    }
}

/// The axis as a plotters coordinate: linear from `lo` to `hi`, gridlines
/// and labels at our ticks.
impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (p0, p1): (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        let f = if f.is_finite() {
            f.clamp(-10.0, 10.0)
        } else {
            0.0
        };
        p0 + (f * f64::from(p1 - p0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.iter().map(|t| t.0).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(v: &f64) -> String {
        fmt_num(*v)
    }

    fn format_ext(&self, v: &f64) -> String {
        self.label(*v)
    }
}
