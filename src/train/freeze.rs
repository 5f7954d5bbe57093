//! The frozen prefix and its feature cache, for any family and task.
//!
//! The bottom groups a strategy freezes run in inference mode on
//! deterministic inputs, so their output is a pure function of the input:
//! it is computed once per split ([`super::cache`]) and the trainable groups
//! train from it. The cache key is the architecture's identity, the
//! boundary, the positions kept, the frozen weights, the stored dtype, the
//! examples' inputs and (in [`super::cache::KeyHasher`]) the code version.

use anyhow::Result;
use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;

use super::cache::{self, CacheMode, CacheReport, Features, KeyHasher, Positions};
use super::config::TrainConfig;
use crate::models::params::host;
use crate::models::state::export_groups;
use crate::models::{Architecture, Flow, TaskModel};
use crate::strategy::Strategy;
use crate::tasks::Task;

/// A feature cache as one run used it.
#[derive(Clone, Debug, Serialize)]
pub struct CacheUse {
    /// Frozen layer groups below the cached output.
    pub boundary: usize,
    pub train: CacheReport,
    pub val: CacheReport,
    /// Training micro-batches and validations served from the cache.
    pub train_batches: usize,
    pub val_passes: usize,
    /// Micro-batches in one epoch.
    pub batches_per_epoch: usize,
}

impl CacheUse {
    /// Seconds the cache saved: each pass it served would have recomputed
    /// the frozen prefix (its compute time), less what building or reading
    /// it cost. An estimate: a step's frozen forward is timed as the build's.
    pub fn seconds_saved(&self) -> f64 {
        let train_passes = self.train_batches as f64 / self.batches_per_epoch.max(1) as f64;
        train_passes * self.train.compute_seconds
            + self.val_passes as f64 * self.val.compute_seconds
            - self.train.seconds
            - self.val.seconds
    }
}

/// The feature cache in use: the boundary it was computed at and both splits.
pub struct ActiveCache {
    pub use_: CacheUse,
    pub train: Features,
    pub val: Features,
}

/// Whether this epoch trains from a feature cache: there is a frozen prefix
/// and the cache is not off. `auto` leaves `gradual` alone: its boundary
/// moves every epoch, so a cache would be used for one epoch and thrown away.
pub fn cache_wanted(config: &TrainConfig, frozen_prefix: usize) -> bool {
    frozen_prefix > 0
        && match config.feature_cache {
            CacheMode::Off => false,
            CacheMode::Auto => config.strategy != Strategy::Gradual,
            CacheMode::Memory | CacheMode::Disk => true,
        }
}

/// Computes (or reads) what the bottom `frozen` groups output for the
/// training and validation splits.
pub fn build_cache<A: Architecture, T: Task>(
    model: &TaskModel<A, T::Head>,
    task: &T,
    config: &TrainConfig,
    frozen: usize,
    splits: [&T::Split; 2],
    batches_per_epoch: usize,
    device: &Device,
) -> Result<ActiveCache> {
    let plain = model.valid();
    let positions = plain.body.reads_after(frozen);
    let mut key = KeyHasher::default();
    key.field("architecture", plain.body.identity().as_bytes())
        .field("boundary", &(frozen as u64).to_le_bytes())
        .field("positions", format!("{positions:?}").as_bytes())
        .field("max_length", &(config.max_length as u64).to_le_bytes())
        .field("dtype", format!("{:?}", config.cache_dtype).as_bytes());
    for (name, shape, values) in export_groups(&plain, &|g| g < frozen) {
        key.tensor(&name, &shape, &values);
    }
    let dir = config
        .cache_dir
        .clone()
        .unwrap_or_else(|| crate::assets::home().join("feature-cache"));
    let mut built = Vec::new();
    for split in splits {
        let mut split_key = key.clone();
        task.hash_inputs(split, &mut split_key);
        let req = cache::Request {
            mode: config.feature_cache,
            dir: &dir,
            dtype: config.cache_dtype,
            memory_budget: config.cache_memory_mb * 1_000_000,
            max_bytes: (config.cache_max_gb.max(0.0) * 1e9) as u64,
            key: split_key.hex(),
            positions,
            hidden: match positions {
                Positions::Map {
                    channels,
                    height,
                    width,
                } => channels * height * width,
                Positions::Vector => plain.body.feature_size(),
                _ => plain.body.hidden_size(),
            },
            lengths: T::lengths(split),
        };
        built.push(cache::get_or_build(&req, 32, |idx| {
            let input = task.input(split, idx, device);
            match plain.body.run(input, 0..frozen) {
                Flow::Hidden { x, .. } => Ok(match positions {
                    Positions::First => host(&x.narrow(1, 0, 1)).1,
                    _ => host(&x).1,
                }),
                Flow::Maps(x) => Ok(host(&x).1),
                Flow::Pooled(x) => Ok(host(&x).1),
                other => anyhow::bail!(
                    "the frozen groups output {other:?}, which the feature cache cannot hold"
                ),
            }
        })?);
    }
    let (val, val_report) = built.pop().expect("two splits");
    let (train, train_report) = built.pop().expect("two splits");
    Ok(ActiveCache {
        use_: CacheUse {
            boundary: frozen,
            train: train_report,
            val: val_report,
            train_batches: 0,
            val_passes: 0,
            batches_per_epoch,
        },
        train,
        val,
    })
}

impl ActiveCache {
    pub fn describe(&self, group_names: &[String]) -> String {
        let u = &self.use_;
        let at = group_names
            .get(u.boundary.saturating_sub(1))
            .map_or("?", String::as_str);
        let mut line = format!(
            "feature cache of the frozen layers (output of {at}): train {}; validation {}",
            u.train.describe(),
            u.val.describe()
        );
        for r in [&u.train, &u.val] {
            if let Some(why) = &r.rejected {
                line.push_str(&format!("\n  cache file not used: {why}"));
            }
        }
        line
    }
}
