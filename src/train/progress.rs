//! What a run tells as it goes: lines for the log and one record per
//! optimizer step. The library says nothing itself; the caller's
//! [`Observer`] prints (the binary draws a progress bar), logs or ignores.

use serde::Serialize;

/// One optimizer step, as `metrics.jsonl` records it.
#[derive(Clone, Debug, Serialize)]
pub struct StepLine {
    pub step: usize,
    /// Epochs done, fractional.
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
}

/// Receives a run's progress.
pub trait Observer {
    /// A line for the log (settings, validation results, cache use, cost).
    fn line(&mut self, _text: &str) {}
    /// An optimizer step finished: step `line.step` of `total`, in epoch
    /// `epoch` (1-based) of `epochs`.
    fn step(&mut self, _line: &StepLine, _epoch: usize, _epochs: usize, _total: usize) {}
    /// Everything of step `step` is done, its checkpoint included when one
    /// was due: the point where a killed run loses nothing written.
    fn step_done(&mut self, _step: usize) {}
}

/// Ignores everything.
pub struct Quiet;

impl Observer for Quiet {}
