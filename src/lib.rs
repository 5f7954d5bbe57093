//! headstart: transfer learning from one binary.
//!
//! The modules follow a batch from disk to loss: `hub` finds and reads
//! checkpoints, `models` builds architectures, `tokenize` and `data` turn
//! files into batches, `embed` pools encoder outputs, `train` tunes, `cost`
//! measures what a run costs and `compare` sets strategies side by side
//! (`report` draws its plots); `assets` fetches the real models and data that
//! the tests and the default job use.

pub mod assets;
pub mod bench;
pub mod captioning;
pub mod compare;
pub mod cost;
pub mod data;
pub mod embed;
pub mod fsutil;
pub mod generate;
pub mod hub;
pub mod inspect;
pub mod kernels;
pub mod models;
pub mod quickstart;
pub mod report;
pub mod strategy;
pub mod tasks;
pub mod tokenize;
pub mod train;

pub use models::{Architecture, TaskModel};
pub use tasks::Task;

use std::path::PathBuf;

use anyhow::Result;

/// Resolves `--model M`: a packaged model's short name (after `headstart data
/// fetch`, else from the HF cache), a local Hugging Face directory, or a hub
/// id through the HF cache; see [`assets::find_model_in`].
pub fn find_model(spec: &str) -> Result<PathBuf> {
    assets::find_model_in(
        spec,
        &assets::home(),
        &hub::hf_cache_dir(),
        hub::hf_offline(),
    )
}

/// The device `choice` names (`cpu`, `cuda` or `cuda:N`; empty: the first
/// CUDA GPU when built with the `cuda` feature, else the pure-Rust CPU
/// backend). The binary passes `HEADSTART_DEVICE`; library functions take
/// the device as a parameter.
pub fn parse_device(choice: &str) -> Result<burn::tensor::Device> {
    let choice = choice.trim();
    match choice {
        "" if cfg!(feature = "cuda") => cuda_device(0),
        "" | "cpu" => Ok(burn::tensor::Device::flex()),
        "cuda" => cuda_device(0),
        other => match other.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda_device(i),
            None => anyhow::bail!("device `{other}`: use cpu, cuda or cuda:N"),
        },
    }
}

/// The CUDA index of `device` (autodiff or not), if it is a CUDA GPU.
pub fn gpu_index(device: &burn::tensor::Device) -> Option<u32> {
    #[cfg(feature = "cuda")]
    {
        let plain = device.clone().inner();
        (0..64u32).find(|&i| plain == burn::tensor::Device::cuda(i as usize))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        None
    }
}

/// The peak f32 FLOP rate of `device`, for model FLOPs utilisation: on the
/// CPU the sustained peak of all its cores, measured once and cached
/// ([`cost::peak::cpu_peak`]); on a GPU its data sheet's.
pub fn compute_peak(device: &burn::tensor::Device) -> cost::peak::Peak {
    peak_of(device, false)
}

/// [`compute_peak`], the CPU's loop run again and the higher of its figure
/// and the cached one kept (`headstart bench`, whose MFU is the headline).
pub fn compute_peak_refreshed(device: &burn::tensor::Device) -> cost::peak::Peak {
    peak_of(device, true)
}

fn peak_of(device: &burn::tensor::Device, refresh: bool) -> cost::peak::Peak {
    if device.clone().inner() == burn::tensor::Device::flex() {
        cost::peak::cpu_peak(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            refresh,
        )
    } else {
        cost::peak::gpu_peak()
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(index: usize) -> Result<burn::tensor::Device> {
    Ok(burn::tensor::Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_index: usize) -> Result<burn::tensor::Device> {
    anyhow::bail!("this headstart was built without CUDA: rebuild with `--features cuda`")
}
