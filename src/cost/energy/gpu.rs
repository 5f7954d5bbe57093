//! The GPU's energy through NVML (the `nvml-wrapper` crate, which loads
//! `libnvidia-ml.so.1` at run time), or its TDP estimate without NVML.

use std::path::Path;

use super::procfs::proc_gpu_model;
use super::tdp::{GpuRow, gpu_row};
use super::{Component, kwh_from_joules};

/// The NVML library opened when a GPU is requested.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

#[derive(Debug)]
pub(super) enum Gpu {
    /// NVML's energy counter (mJ since the driver loaded).
    Energy {
        nvml: NvmlGpu,
        start_mj: u64,
        last_mj: u64,
    },
    /// NVML power samples (W), integrated with the trapezoid rule.
    Power {
        nvml: NvmlGpu,
        last_w: f64,
        joules: f64,
        why_not_energy: String,
    },
    /// No NVML: TDP x 100% when the model is known, else nothing.
    Estimate { name: Option<String>, why: String },
}

pub(super) fn gpu_name(gpu: &Gpu) -> Option<String> {
    match gpu {
        Gpu::Energy { nvml, .. } | Gpu::Power { nvml, .. } => Some(nvml.name.clone()),
        Gpu::Estimate { name, .. } => name.clone(),
    }
}

pub(super) fn gpu_component(gpu: &Gpu, seconds: f64) -> Component {
    let per_second = |joules: f64| if seconds > 0.0 { joules / seconds } else { 0.0 };
    match gpu {
        Gpu::Energy {
            nvml,
            start_mj,
            last_mj,
        } => {
            let joules = last_mj.saturating_sub(*start_mj) as f64 / 1000.0;
            Component {
                kwh: kwh_from_joules(joules),
                mean_watts: per_second(joules),
                measured: true,
                how: format!(
                    "measured: NVML nvmlDeviceGetTotalEnergyConsumption on GPU {} ({}; whole \
                     board, all processes)",
                    nvml.index, nvml.name
                ),
            }
        }
        Gpu::Power {
            nvml,
            joules,
            why_not_energy,
            ..
        } => Component {
            kwh: kwh_from_joules(*joules),
            mean_watts: per_second(*joules),
            measured: true,
            how: format!(
                "measured: NVML nvmlDeviceGetPowerUsage on GPU {} ({}), sampled and integrated \
                 over time (energy counter: {why_not_energy}; whole board, all processes)",
                nvml.index, nvml.name
            ),
        },
        Gpu::Estimate { name, why } => match name.as_deref().and_then(gpu_row) {
            Some(GpuRow {
                name: shown,
                tdp_w: watts,
                ..
            }) => Component {
                kwh: kwh_from_joules(watts * seconds),
                mean_watts: *watts,
                measured: false,
                how: format!(
                    "estimated ({why}): TDP {watts} W ({shown}, shipped table) x 100% (GPU \
                     utilisation is unknown without NVML: assumed busy throughout, an upper \
                     bound)"
                ),
            },
            None => Component {
                kwh: 0.0,
                mean_watts: 0.0,
                measured: false,
                how: match name {
                    Some(n) => format!(
                        "not measured ({why}) and not estimated: GPU {n:?} is not in the \
                         shipped TDP table; GPU energy is left out of the total"
                    ),
                    None => format!(
                        "not measured ({why}) and not estimated: GPU model unknown (set \
                         MeterOptions::gpu_name); GPU energy is left out of the total"
                    ),
                },
            },
        },
    }
}

/// Opens GPU `index` through NVML loaded from `library`: its energy counter
/// when it has one, else its power reading, else an estimate that says why.
pub(super) fn open_gpu(library: &str, index: u32, name_hint: Option<&str>) -> Gpu {
    match NvmlGpu::open(library, index) {
        Ok(nvml) => match nvml.total_energy_mj() {
            Some(mj) => Gpu::Energy {
                nvml,
                start_mj: mj,
                last_mj: mj,
            },
            None => {
                let why_not_energy = nvml.energy_error.clone();
                match nvml.power_mw() {
                    Some(mw) => Gpu::Power {
                        nvml,
                        last_w: f64::from(mw) / 1000.0,
                        joules: 0.0,
                        why_not_energy,
                    },
                    None => Gpu::Estimate {
                        name: Some(nvml.name.clone()),
                        why: format!(
                            "NVML opened but GPU {index} reports neither energy \
                             ({why_not_energy}) nor power"
                        ),
                    },
                }
            }
        },
        Err(why) => Gpu::Estimate {
            name: name_hint
                .map(str::to_string)
                .or_else(|| proc_gpu_model(Path::new("/proc/driver/nvidia/gpus"), index)),
            why,
        },
    }
}

// ---------------------------------------------------------------------------
// NVML
// ---------------------------------------------------------------------------

/// One GPU opened through NVML (`nvml-wrapper`, which loads the library at
/// run time and shuts NVML down when dropped). NVML is thread-safe, and the
/// meter only calls it under its mutex.
pub(super) struct NvmlGpu {
    nvml: nvml_wrapper::Nvml,
    index: u32,
    name: String,
    /// Whether the board's energy counter answered when the GPU was opened.
    has_energy: bool,
    /// Why the energy counter is not used ("" when it is).
    energy_error: String,
}

impl std::fmt::Debug for NvmlGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlGpu")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NvmlGpu {
    /// Loads NVML from `library` (a file name searched as `dlopen` does, or
    /// a path), initialises it and opens GPU `index`. Any failure is an
    /// `Err` that says what failed, never a panic.
    fn open(library: &str, index: u32) -> Result<NvmlGpu, String> {
        use nvml_wrapper::error::NvmlError;

        let nvml = nvml_wrapper::Nvml::builder()
            .lib_path(std::ffi::OsStr::new(library))
            .init()
            .map_err(|e| match e {
                NvmlError::LibloadingError(e) => format!("NVML not loadable: {library}: {e}"),
                NvmlError::FailedToLoadSymbol(e) => {
                    format!("NVML not usable: {library} lacks nvmlInit_v2: {e}")
                }
                e => format!("NVML init failed: {e}"),
            })?;
        let (name, has_energy, energy_error) = {
            let device = nvml
                .device_by_index(index)
                .map_err(|e| format!("NVML has no GPU {index}: {e}"))?;
            let name = device.name().unwrap_or_else(|_| format!("GPU {index}"));
            match device.total_energy_consumption() {
                Ok(_) => (name, true, String::new()),
                Err(e) => (
                    name,
                    false,
                    format!("nvmlDeviceGetTotalEnergyConsumption: {e}"),
                ),
            }
        };
        Ok(NvmlGpu {
            nvml,
            index,
            name,
            has_energy,
            energy_error,
        })
    }

    fn device(&self) -> Option<nvml_wrapper::Device<'_>> {
        self.nvml.device_by_index(self.index).ok()
    }

    /// Energy since the driver loaded, mJ.
    pub(super) fn total_energy_mj(&self) -> Option<u64> {
        if !self.has_energy {
            return None;
        }
        self.device()?.total_energy_consumption().ok()
    }

    /// Current board power, mW.
    pub(super) fn power_mw(&self) -> Option<u32> {
        self.device()?.power_usage().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::energy::tests::close;

    #[test]
    fn missing_nvml_is_an_error_not_a_panic() {
        let err = NvmlGpu::open("libheadstart-no-such-library.so.1", 0).unwrap_err();
        assert!(
            err.starts_with("NVML not loadable: libheadstart-no-such-library.so.1: "),
            "{err}"
        );
    }

    #[test]
    fn without_nvml_the_gpu_is_estimated_and_says_why() {
        let gpu = open_gpu("libheadstart-no-such-library.so.1", 0, Some("NVIDIA L4"));
        let c = gpu_component(&gpu, 100.0);
        assert!(!c.measured);
        // 72 W x 100 s = 7200 J = 0.002 kWh.
        assert!(close(c.kwh, 0.002), "{}", c.kwh);
        assert!(
            c.how
                .starts_with("estimated (NVML not loadable: libheadstart-no-such-library.so.1: "),
            "{}",
            c.how
        );
        assert!(
            c.how.contains("TDP 72 W (NVIDIA L4, shipped table)"),
            "{}",
            c.how
        );
        assert_eq!(gpu_name(&gpu).as_deref(), Some("NVIDIA L4"));
    }

    #[test]
    fn gpu_estimate_without_nvml() {
        let gpu = Gpu::Estimate {
            name: Some("NVIDIA H100 80GB HBM3".into()),
            why: "NVML not loadable".into(),
        };
        let c = gpu_component(&gpu, 36.0);
        // 700 W x 36 s = 25 200 J = 0.007 kWh.
        assert!(close(c.kwh, 0.007));
        assert!(!c.measured);
        assert!(
            c.how
                .starts_with("estimated (NVML not loadable): TDP 700 W")
        );
        let unknown = Gpu::Estimate {
            name: None,
            why: "x".into(),
        };
        assert_eq!(gpu_component(&unknown, 36.0).kwh, 0.0);
    }
}
