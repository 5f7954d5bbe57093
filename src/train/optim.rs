//! AdamW with per-group learning rates, decoupled weight decay (none on biases
//! and LayerNorm weights), gradient accumulation and clipping by global norm,
//! and the warmup + decay schedule.
//!
//! Parameters are addressed by their module path (`bert.layers.3.query.weight`),
//! which is stable across runs, so optimizer state saved at a checkpoint is
//! found again on resume. Only parameters that received a gradient get state:
//! frozen ones have none.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Gradients, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::kernels::{self, adamw};
use crate::models::params::{NamedTensors, host};

/// Collects `enter_module` names into a dotted path.
#[derive(Default)]
struct PathTracker(Vec<String>);

impl PathTracker {
    fn enter(&mut self, name: &str) {
        self.0.push(name.to_string());
    }
    fn exit(&mut self) {
        self.0.pop();
    }
    fn key(&self) -> String {
        self.0.join(".")
    }
}

/// Gradients summed over micro-batches, flattened, by parameter path.
#[derive(Default)]
pub struct GradAccumulator {
    pub grads: BTreeMap<String, Tensor<1>>,
}

struct Collect<'a> {
    path: PathTracker,
    grads: &'a mut Gradients,
    acc: &'a mut BTreeMap<String, Tensor<1>>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(g) = param.val().grad_remove(self.grads) else {
            return;
        };
        let n = g.shape().num_elements();
        let g = g.reshape([n]);
        let key = self.path.key();
        let sum = match self.acc.remove(&key) {
            Some(prev) => prev + g,
            None => g,
        };
        self.acc.insert(key, sum);
    }
}

impl GradAccumulator {
    /// Moves the gradients of `model`'s parameters out of `grads` into the sums.
    pub fn add<M: Module>(&mut self, model: &M, grads: &mut Gradients) {
        let mut v = Collect {
            path: PathTracker::default(),
            grads,
            acc: &mut self.grads,
        };
        model.visit(&mut v);
    }

    /// sqrt of the sum of squares of every gradient.
    pub fn global_norm(&self) -> f64 {
        let parts: Vec<Tensor<1>> = self
            .grads
            .values()
            .map(|g| kernels::sum_squares(g.clone()))
            .collect();
        if parts.is_empty() {
            return 0.0;
        }
        // one read back for all of them, added in order in f64
        let (_, sums) = host(&Tensor::cat(parts, 0));
        sums.iter().map(|&v| v as f64).sum::<f64>().sqrt()
    }

    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's AdamW defaults, with transformers' usual weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// First and second moments of one parameter, and how many updates it had.
#[derive(Clone)]
pub struct ParamState {
    pub m: Tensor<1>,
    pub v: Tensor<1>,
    pub step: u64,
}

pub struct AdamW {
    pub config: AdamWConfig,
    pub states: BTreeMap<String, ParamState>,
}

/// Whether weight decay applies to the parameter at `path`: not to biases and
/// not to LayerNorm weights (as transformers' Trainer does).
pub fn decays(path: &str) -> bool {
    !(path.ends_with(".bias") || path.contains("layer_norm"))
}

struct Update<'a> {
    path: PathTracker,
    acc: &'a mut BTreeMap<String, Tensor<1>>,
    opt: &'a mut AdamW,
    lr_of: &'a dyn Fn(&str) -> f64,
    grad_scale: f64,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.key();
        let Some(grad) = self.acc.remove(&key) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let p = tensor.inner().reshape([n]);
        let c = self.opt.config;
        let lr = (self.lr_of)(&key);
        let state = self.opt.states.remove(&key);
        let step = state.as_ref().map_or(1, |s| s.step + 1);
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        let decay = if decays(&key) && c.weight_decay > 0.0 {
            1.0 - lr * c.weight_decay
        } else {
            1.0
        };
        let (updated, m, v) = if p.dtype() == DType::F32 && kernels::is_flex(&p.device()) {
            // one parallel pass (kernels::adamw), the same arithmetic as below
            let (m, v) = match state {
                Some(s) => (s.m, s.v),
                None => (
                    Tensor::zeros([n], &p.device()),
                    Tensor::zeros([n], &p.device()),
                ),
            };
            let hyper = adamw::Hyper {
                grad_scale: self.grad_scale as f32,
                beta1: c.beta1 as f32,
                beta2: c.beta2 as f32,
                one_minus_beta1: (1.0 - c.beta1) as f32,
                one_minus_beta2: (1.0 - c.beta2) as f32,
                eps: c.eps as f32,
                decay: decay as f32,
                sqrt_bc2: bc2.sqrt() as f32,
                step_size: (lr / bc1) as f32,
            };
            kernels::adamw_tensors(p, grad, m, v, hyper)
        } else {
            let g = if self.grad_scale != 1.0 {
                grad * self.grad_scale
            } else {
                grad
            };
            let (m, v) = match state {
                Some(s) => (
                    s.m * c.beta1 + g.clone() * (1.0 - c.beta1),
                    s.v * c.beta2 + g.powi_scalar(2) * (1.0 - c.beta2),
                ),
                None => (
                    g.clone() * (1.0 - c.beta1),
                    g.powi_scalar(2) * (1.0 - c.beta2),
                ),
            };
            let decayed = if decay != 1.0 { p * decay } else { p };
            let denom = v.clone().sqrt() / bc2.sqrt() + c.eps;
            (decayed - m.clone() / denom * (lr / bc1), m, v)
        };
        self.opt.states.insert(key, ParamState { m, v, step });
        let mut t = Tensor::from_inner(updated.reshape(shape));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            states: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has an accumulated gradient, at the
    /// rate `lr_of(path)`, gradients multiplied by `grad_scale` (clipping).
    /// Empties the accumulator.
    pub fn step<M: Module>(
        &mut self,
        model: M,
        acc: &mut GradAccumulator,
        lr_of: &dyn Fn(&str) -> f64,
        grad_scale: f64,
    ) -> M {
        let mut mapper = Update {
            path: PathTracker::default(),
            acc: &mut acc.grads,
            opt: self,
            lr_of,
            grad_scale,
        };
        let model = model.map(&mut mapper);
        acc.grads.clear();
        model
    }

    /// State as named host tensors (`{path}.m`, `{path}.v`) and step counts.
    pub fn export(&self) -> (NamedTensors, BTreeMap<String, u64>) {
        let mut tensors = Vec::new();
        let mut steps = BTreeMap::new();
        for (k, s) in &self.states {
            let (shape, m) = host(&s.m);
            tensors.push((format!("{k}.m"), shape.clone(), m));
            let (_, v) = host(&s.v);
            tensors.push((format!("{k}.v"), shape, v));
            steps.insert(k.clone(), s.step);
        }
        (tensors, steps)
    }

    /// Restores what [`AdamW::export`] wrote.
    pub fn import(
        config: AdamWConfig,
        tensors: &BTreeMap<String, crate::hub::HostTensor>,
        steps: &BTreeMap<String, u64>,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut states = BTreeMap::new();
        let inner = device.clone().inner();
        for (k, &step) in steps {
            let get = |suffix: &str| -> anyhow::Result<Tensor<1>> {
                let name = format!("{k}.{suffix}");
                let t = tensors.get(&name).ok_or_else(|| {
                    anyhow::anyhow!("optimizer state lacks `{name}`: the checkpoint is incomplete")
                })?;
                Ok(Tensor::from_data(
                    TensorData::new(t.data.clone(), [t.data.len()]),
                    &inner,
                ))
            };
            states.insert(
                k.clone(),
                ParamState {
                    m: get("m")?,
                    v: get("v")?,
                    step,
                },
            );
        }
        Ok(Self { config, states })
    }
}

/// How the learning rate falls after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Linear,
    Cosine,
    Constant,
}

/// Linear warmup from 0 to 1 over `warmup` steps, then decay to 0 at `total`.
pub fn schedule(step: usize, warmup: usize, total: usize, decay: Decay) -> f64 {
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    match decay {
        Decay::Linear => 1.0 - progress,
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Decay::Constant => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::LinearExt;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Tiny {
        linear: Linear,
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(schedule(0, 4, 10, Decay::Linear), 0.25);
        assert_eq!(schedule(3, 4, 10, Decay::Linear), 1.0);
        assert_eq!(schedule(4, 4, 10, Decay::Linear), 1.0);
        assert!((schedule(7, 4, 10, Decay::Linear) - 0.5).abs() < 1e-12);
        assert!((schedule(7, 4, 10, Decay::Cosine) - 0.5).abs() < 1e-12);
        assert_eq!(schedule(10, 4, 10, Decay::Linear), 0.0);
        assert_eq!(schedule(5, 0, 10, Decay::Constant), 1.0);
    }

    #[test]
    fn decay_excludes_biases_and_layer_norms() {
        assert!(decays("bert.layers.0.query.weight"));
        assert!(!decays("bert.layers.0.query.bias"));
        assert!(!decays("bert.layers.0.attention_layer_norm.gamma"));
        assert!(decays("bert.embeddings.word_embeddings.weight"));
    }

    /// One AdamW step computed by hand: first step moves each weight by
    /// lr * sign(g) (m/sqrt(v) = g/|g| after bias correction), plus decay.
    #[test]
    fn first_step_matches_hand_computation() {
        let device = Device::default().autodiff();
        let mut linear = LinearConfig::new(2, 1).init(&device);
        linear.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.5f32, -1.0], [2, 1]),
            &device,
        ));
        linear.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.25f32], [1]),
            &device,
        )));
        let model = Tiny { linear };
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0], [1, 2]), &device);
        // loss = w0*1 + w1*2 + b -> grads (1, 2, 1)
        let loss = model.linear.apply(x).sum();
        let mut grads = loss.backward();
        let mut acc = GradAccumulator::default();
        acc.add(&model, &mut grads);
        assert_eq!(acc.grads.len(), 2); // weight [2, 1] and bias [1]
        assert!((acc.global_norm() - 6f64.sqrt()).abs() < 1e-6);
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        });
        let lr = 0.01;
        let model = opt.step(model, &mut acc, &|_| lr, 1.0);
        let (_, w) = host(&model.linear.weight.val());
        let (_, b) = host(&model.linear.bias.as_ref().unwrap().val());
        let expect_w0 = 0.5 * (1.0 - lr * 0.1) - lr * (1.0 / (1.0 + 1e-8));
        let expect_w1 = -(1.0 - lr * 0.1) - lr * (1.0 / (1.0 + 1e-8 / 2.0));
        assert!((w[0] as f64 - expect_w0).abs() < 1e-6, "{w:?}");
        assert!((w[1] as f64 - expect_w1).abs() < 1e-6, "{w:?}");
        // no decay on the bias
        assert!((b[0] as f64 - (0.25 - lr)).abs() < 1e-6, "{b:?}");
        assert_eq!(opt.states["linear.weight"].step, 1);
        assert!(acc.is_empty());
        // still trainable after the update
        assert!(model.linear.weight.val().is_require_grad());
    }
}
