//! Low-rank adapters (LoRA, Hu et al. 2021) on a transformer's projections.
//!
//! A projection `x W + b` with an adapter computes
//! `x W + b + scale * dropout(x) A B` with `A` `[in, r]`, `B` `[r, out]`
//! and `scale = alpha / r`; `A` starts Kaiming-uniform with a = sqrt(5)
//! (bound 1/sqrt(in), as PEFT), `B` at zero, so a fresh adapter changes
//! nothing. Checkpoints hold them in PEFT's layout: `...q_proj.lora_A.weight`
//! `[r, in]` and `...q_proj.lora_B.weight` `[out, r]`, whatever the layout of
//! the base weight (GPT-2's `Conv1D` too).
//!
//! [`Linear`] is burn's `Linear` plus the optional adapter; it keeps the
//! struct name `Linear` because the state walk keys on it (a `Linear`
//! weight is stored transposed), so its base weight keeps its checkpoint key
//! and layout. Without an adapter it computes exactly what burn's does.
//! PEFT's own module (`peft.tuners.lora.Linear`) cannot run here, so the
//! few lines of the adapter are written out.

// `lora_A`/`lora_B`: the field names are the checkpoint keys' segments
#![allow(non_snake_case)]

use crate::kernels::dropout::DropoutExt;
use anyhow::{Result, bail};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::params::SeededRng;

/// Rank, scaling, dropout and target modules of the adapters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Projection names of the family (`query`, `q_proj`, `c_attn`); empty:
    /// the family's defaults.
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.r.max(1) as f64
    }

    /// The targets for a family whose projections are `valid` (defaults
    /// `defaults`): an unknown name is an error naming it and the valid ones.
    pub fn resolve_targets(
        &self,
        family: &str,
        valid: &[&str],
        defaults: &[&str],
    ) -> Result<Vec<String>> {
        if valid.is_empty() {
            bail!(
                "--strategy lora: the `{family}` family has no projections to adapt \
                 (LoRA is implemented for bert, vit, gpt2 and llama)"
            );
        }
        if self.r == 0 {
            bail!("--lora-r must be at least 1");
        }
        let targets: Vec<String> = if self.targets.is_empty() {
            defaults.iter().map(|s| s.to_string()).collect()
        } else {
            self.targets.clone()
        };
        for t in &targets {
            if !valid.contains(&t.as_str()) {
                bail!(
                    "--lora-targets: `{t}` is not a projection of the `{family}` family; \
                     valid names: {}",
                    valid.join(", ")
                );
            }
        }
        Ok(targets)
    }
}

/// What a family's projection walk does to each targeted projection.
pub enum LoraOp<'a> {
    /// Gives it a fresh adapter.
    Add {
        config: &'a LoraConfig,
        rng: &'a mut SeededRng,
    },
    /// Folds its adapter into the base weight and drops the adapter.
    Merge,
    /// Drops the adapters whose `lora_A` parameter is one of these (the
    /// base weight is left as it is).
    Drop(&'a std::collections::HashSet<burn::module::ParamId>),
}

/// A projection that can carry an adapter.
pub trait Adaptable {
    /// `(in, out)`.
    fn sizes(&self) -> (usize, usize);
    fn device(&self) -> Device;
    fn adapter_mut(&mut self) -> AdapterMut<'_>;

    /// Applies `op`.
    fn apply_lora(&mut self, op: &mut LoraOp) {
        let (d_in, d_out) = self.sizes();
        let device = self.device();
        let a = self.adapter_mut();
        match op {
            LoraOp::Add { config, rng } => {
                let r = config.r;
                let bound = 1.0 / (d_in.max(1) as f64).sqrt();
                // drawn in PEFT's stored order [r, in], held [in, r]
                let stored: Vec<f32> = (0..r * d_in)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let held = super::params::transpose(&stored, r, d_in);
                *a.a = Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(held, [d_in, r]),
                    &device,
                )));
                *a.b = Some(Param::from_tensor(Tensor::zeros([r, d_out], &device)));
                *a.dropout = DropoutConfig::new(config.dropout).init();
                *a.scale = config.scale();
            }
            LoraOp::Merge => {
                if let (Some(la), Some(lb)) = (a.a.take(), a.b.take()) {
                    let delta = crate::kernels::matmul(la.val(), lb.val()) * *a.scale;
                    let (id, w, _) = std::mem::replace(
                        a.weight,
                        Param::from_tensor(Tensor::zeros([1, 1], &device)),
                    )
                    .consume();
                    *a.weight = Param::initialized(id, w + delta);
                }
            }
            LoraOp::Drop(ids) => {
                if a.a.as_ref().is_some_and(|p| ids.contains(&p.id)) {
                    *a.a = None;
                    *a.b = None;
                    *a.dropout = no_dropout();
                    *a.scale = 0.0;
                }
            }
        }
    }
}

/// Mutable views of a projection's base weight (`[in, out]`) and adapter.
pub struct AdapterMut<'a> {
    pub weight: &'a mut Param<Tensor<2>>,
    pub a: &'a mut Option<Param<Tensor<2>>>,
    pub b: &'a mut Option<Param<Tensor<2>>>,
    pub dropout: &'a mut Dropout,
    pub scale: &'a mut f64,
}

/// `scale * dropout(x) A B`, or `None` without an adapter.
pub fn adapter_delta<const D: usize>(
    x: &Tensor<D>,
    a: &Option<Param<Tensor<2>>>,
    b: &Option<Param<Tensor<2>>>,
    dropout: &Dropout,
    scale: f64,
) -> Option<Tensor<D>> {
    let (a, b) = (a.as_ref()?, b.as_ref()?);
    // the scale on the rank-r activations, not on the [.., out] product:
    // one pass over r values a row each way instead of `out`
    let h = crate::kernels::linear(dropout.apply(x.clone()), a.val(), None) * scale;
    Some(crate::kernels::linear(h, b.val(), None))
}

/// A dropout that does nothing (an adapter-less projection's placeholder).
pub fn no_dropout() -> Dropout {
    DropoutConfig::new(0.0).init()
}

/// burn's `Linear` (weight held `[in, out]`) with an optional adapter.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// `[in, r]`, stored `[r, in]` as `lora_A.weight`.
    pub lora_A: Option<Param<Tensor<2>>>,
    /// `[r, out]`, stored `[out, r]` as `lora_B.weight`.
    pub lora_B: Option<Param<Tensor<2>>>,
    pub lora_dropout: Dropout,
    #[module(skip)]
    pub lora_scale: f64,
}

impl Linear {
    /// Zeros until loaded or initialised, without an adapter.
    pub fn zeros(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::zeros([d_in, d_out], device)),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
            lora_A: None,
            lora_B: None,
            lora_dropout: no_dropout(),
            lora_scale: 0.0,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let delta = adapter_delta(
            &x,
            &self.lora_A,
            &self.lora_B,
            &self.lora_dropout,
            self.lora_scale,
        );
        let y = crate::kernels::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        match delta {
            Some(d) => y + d,
            None => y,
        }
    }

    pub fn has_adapter(&self) -> bool {
        self.lora_A.is_some()
    }
}

impl Adaptable for Linear {
    fn sizes(&self) -> (usize, usize) {
        let [i, o] = self.weight.dims();
        (i, o)
    }
    fn device(&self) -> Device {
        self.weight.device()
    }
    fn adapter_mut(&mut self) -> AdapterMut<'_> {
        AdapterMut {
            weight: &mut self.weight,
            a: &mut self.lora_A,
            b: &mut self.lora_B,
            dropout: &mut self.lora_dropout,
            scale: &mut self.lora_scale,
        }
    }
}

/// Applies `op` to `p` when `name` is among `targets` (merging and
/// dropping apply to every projection that has an adapter).
pub fn visit(p: &mut impl Adaptable, name: &str, targets: &[String], op: &mut LoraOp) {
    let wanted = match op {
        LoraOp::Merge | LoraOp::Drop(_) => true,
        LoraOp::Add { .. } => targets.iter().any(|t| t == name),
    };
    if wanted {
        p.apply_lora(op);
    }
}

/// Whether a module path is an adapter parameter.
pub fn is_adapter_path(path: &str) -> bool {
    path.ends_with(".lora_A") || path.ends_with(".lora_B")
}

/// Marks every parameter of `module` outside the adapters as needing no
/// gradient (and the adapters as needing one); `keep` names other paths
/// that train (a classifier's head).
pub fn freeze_all_but_adapters<M: Module>(module: M, keep: &dyn Fn(&str) -> bool) -> M {
    mark_by_path(module, &|path| Some(is_adapter_path(path) || keep(path)))
}

/// `module` with the parameters whose path `keep` accepts set to train,
/// the others left as they were (new layers inside a frozen model: a
/// decoder's fresh cross-attention under `freeze:N`).
pub fn train_also<M: Module>(module: M, keep: &dyn Fn(&str) -> bool) -> M {
    mark_by_path(module, &|path| keep(path).then_some(true))
}

/// Sets each parameter to train or not as `decide` says of its module
/// path (`None`: left as it is).
fn mark_by_path<M: Module>(module: M, decide: &dyn Fn(&str) -> Option<bool>) -> M {
    struct Mark<'a> {
        path: Vec<String>,
        decide: &'a dyn Fn(&str) -> Option<bool>,
    }
    impl burn::module::ModuleMapper for Mark<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            match (self.decide)(&self.path.join(".")) {
                Some(train) => param.set_require_grad(train),
                None => param,
            }
        }
    }
    module.map(&mut Mark {
        path: Vec::new(),
        decide,
    })
}

/// Forward FLOPs of the adapters in each of `groups` on `tokens`
/// positions: `2 * tokens * r * (in + out)` per adapter.
pub fn adapter_flops<M: Module>(model: &M, groups: &[super::Group], tokens: usize) -> Vec<f64> {
    struct Count<'a> {
        path: Vec<String>,
        groups: &'a [super::Group],
        out: Vec<f64>,
        tokens: f64,
    }
    impl burn::module::ModuleVisitor for Count<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let path = self.path.join(".");
            if is_adapter_path(&path) {
                let n: usize = param.dims().iter().product();
                let g = super::group_of(self.groups, &path);
                self.out[g] += 2.0 * self.tokens * n as f64;
            }
        }
    }
    let mut c = Count {
        path: Vec::new(),
        groups,
        out: vec![0.0; groups.len()],
        tokens: tokens as f64,
    };
    model.visit(&mut c);
    c.out
}

/// Parameters that train (need a gradient) and all parameters.
pub fn trainable_params<M: Module>(model: &M) -> (usize, usize) {
    struct Count(usize, usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let n: usize = param.dims().iter().product();
            self.1 += n;
            if param.is_require_grad() {
                self.0 += n;
            }
        }
    }
    let mut c = Count(0, 0);
    model.visit(&mut c);
    (c.0, c.1)
}

pub mod peft;

#[cfg(test)]
mod tests;
