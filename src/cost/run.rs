//! What one run cost, as saved in `cost.json` and printed at its end: wall
//! time by phase, FLOPs and model FLOPs utilisation, energy (measured or
//! estimated, and how), CO2 and money.

use std::path::Path;

use anyhow::{Result, anyhow};
use serde::{Deserialize, Serialize};

use super::carbon::{self, Intensity, Prices};
use super::energy::{CpuEstimate, EnergyMeter, EnergyReading, MeterOptions, RamEstimate};
use super::peak::Peak;
use crate::fsutil::write_json_atomic;

/// Where the electricity comes from and what it costs (`train`, `eval`, `compare`).
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct CostOptions {
    /// Country whose grid carbon intensity applies (ISO 3166 code, e.g. FR or FRA); default: the world average.
    #[arg(long)]
    pub country: Option<String>,
    /// Cloud region whose grid applies (e.g. us-east-1, europe-west1, westeurope); wins over --country.
    #[arg(long)]
    pub region: Option<String>,
    /// Power usage effectiveness of the site, multiplied into the energy (1.0 counts none).
    #[arg(long, default_value_t = 1.0)]
    pub pue: f64,
    /// Electricity price per kWh (default: 0.15, in USD).
    #[arg(long)]
    pub price_kwh: Option<f64>,
    /// Machine price per hour, e.g. a cloud instance's (default: 0).
    #[arg(long)]
    pub price_hour: Option<f64>,
    /// The peak FLOP rate MFU is measured against, GFLOP/s (default: on a
    /// CPU, measured once by an FMA loop on all cores and cached; on a GPU,
    /// its data sheet's dense f32 figure).
    #[arg(long)]
    #[serde(default)]
    pub peak_gflops: Option<f64>,
}

impl Default for CostOptions {
    fn default() -> Self {
        Self {
            country: None,
            region: None,
            pue: 1.0,
            price_kwh: None,
            price_hour: None,
            peak_gflops: None,
        }
    }
}

impl CostOptions {
    /// Checks the options and starts measuring energy (the GPU too when
    /// computing on one).
    pub fn start_meter(&self, device: &burn::tensor::Device) -> Result<EnergyMeter> {
        self.check()?;
        let gpu = crate::gpu_index(device);
        Ok(EnergyMeter::start(MeterOptions {
            pue: self.pue,
            gpu,
            ..MeterOptions::default()
        }))
    }

    /// Rejects a PUE below 1 and an unknown country or region.
    pub fn check(&self) -> Result<()> {
        if !(self.pue.is_finite() && self.pue >= 1.0) {
            return Err(anyhow!(
                "--pue {} is not a power usage effectiveness (1.0 or more)",
                self.pue
            ));
        }
        self.intensity()?;
        if let Some(g) = self.peak_gflops {
            super::peak::from_gflops(g)?;
        }
        Ok(())
    }

    /// The peak MFU is measured against: `--peak-gflops`, else the
    /// device's ([`crate::compute_peak`]).
    pub fn peak(&self, device: &burn::tensor::Device) -> Result<Peak> {
        match self.peak_gflops {
            Some(g) => super::peak::from_gflops(g),
            None => Ok(crate::compute_peak(device)),
        }
    }

    pub fn intensity(&self) -> Result<Intensity> {
        carbon::intensity(self.country.as_deref(), self.region.as_deref()).map_err(|e| anyhow!(e))
    }

    pub fn prices(&self) -> Prices {
        let mut p = Prices::default();
        if let Some(v) = self.price_kwh {
            p.per_kwh = v;
        }
        if let Some(v) = self.price_hour {
            p.per_hour = v;
        }
        p
    }
}

/// Wall-clock seconds by phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Reading the configuration, data and tokenising.
    pub data: f64,
    /// Loading or initialising the model and optimizer.
    pub load: f64,
    /// Computing (or reading) the feature cache.
    pub feature_cache: f64,
    /// Forward, backward and optimizer steps.
    pub train: f64,
    /// Validation.
    pub eval: f64,
    /// Writing checkpoints and the best weights.
    pub checkpoint: f64,
    /// Writing the Hugging Face model.
    pub export: f64,
}

impl Phases {
    pub fn total(&self) -> f64 {
        self.data
            + self.load
            + self.feature_cache
            + self.train
            + self.eval
            + self.checkpoint
            + self.export
    }
}

/// FLOPs by phase, counted from the architecture ([`super::flops`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlopCount {
    pub train: f64,
    pub eval: f64,
    pub feature_cache: f64,
}

impl FlopCount {
    pub fn total(&self) -> f64 {
        self.train + self.eval + self.feature_cache
    }
}

/// Energy of a run, as saved.
///
/// An estimated CPU or RAM figure carries its parts (`cpu_estimate`,
/// `ram_estimate`): the CPU's watts are its TDP prorated to this machine's
/// logical CPUs x the CPU share measured (`cpu_share`), the RAM's the
/// machine's RAM power x the share of its memory the process held; either
/// is multiplied by the wall time, so an estimated energy is proportional
/// to time x (CPU watts at full load x CPU share + RAM watts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    /// Total, after PUE.
    pub kwh: f64,
    pub cpu_kwh: f64,
    pub gpu_kwh: Option<f64>,
    pub ram_kwh: f64,
    pub cpu_watts: f64,
    pub gpu_watts: Option<f64>,
    pub ram_watts: f64,
    pub pue: f64,
    /// Every component read from a hardware counter.
    pub measured: bool,
    /// How each component was obtained.
    pub cpu_how: String,
    pub gpu_how: Option<String>,
    pub ram_how: String,
    pub cpu_model: String,
    pub gpu_model: Option<String>,
    pub cpu_count: usize,
    pub ram_total_gb: f64,
    /// This process's CPU seconds over (wall seconds x logical CPUs), as
    /// measured; `null` when unreadable.
    pub cpu_share: Option<f64>,
    /// How the CPU watts were estimated (TDP, its source, proration, share);
    /// `null` when RAPL measured them.
    pub cpu_estimate: Option<CpuEstimate>,
    /// How the RAM watts were estimated (machine memory, DIMMs, machine
    /// watts, the process's share); `null` when RAPL measured them.
    pub ram_estimate: Option<RamEstimate>,
}

impl From<&EnergyReading> for Energy {
    fn from(r: &EnergyReading) -> Self {
        Self {
            kwh: r.total_kwh,
            cpu_kwh: r.cpu.kwh,
            gpu_kwh: r.gpu.as_ref().map(|g| g.kwh),
            ram_kwh: r.ram.kwh,
            cpu_watts: r.cpu.mean_watts,
            gpu_watts: r.gpu.as_ref().map(|g| g.mean_watts),
            ram_watts: r.ram.mean_watts,
            pue: r.pue,
            measured: r.measured(),
            cpu_how: r.cpu.how.clone(),
            gpu_how: r.gpu.as_ref().map(|g| g.how.clone()),
            ram_how: r.ram.how.clone(),
            cpu_model: r.cpu_model.clone(),
            gpu_model: r.gpu_model.clone(),
            cpu_count: r.cpu_count,
            ram_total_gb: r.ram_total_gb,
            cpu_share: r.cpu_share,
            cpu_estimate: r.cpu_estimate.clone(),
            ram_estimate: r.ram_estimate.clone(),
        }
    }
}

/// The carbon intensity a run was priced at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntensityUsed {
    pub g_per_kwh: f64,
    pub code: String,
    pub name: String,
    pub source: String,
    pub year: u16,
}

/// Money: energy at the electricity price plus hours at the machine price.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Money {
    pub total: f64,
    pub electricity: f64,
    pub machine: f64,
    pub per_kwh: f64,
    pub per_hour: f64,
    pub currency: String,
}

/// Everything a run cost; `cost.json` of a run directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunCost {
    pub seconds: f64,
    pub phases: Phases,
    pub flops: FlopCount,
    pub flops_total: f64,
    pub peak_flops_per_s: f64,
    /// How the peak was derived.
    pub peak_how: String,
    /// FLOPs of the whole run over (seconds x peak).
    pub mfu: f64,
    /// Training FLOPs over (training seconds x peak).
    pub train_mfu: f64,
    pub energy: Energy,
    pub co2_kg: f64,
    pub intensity: IntensityUsed,
    pub money: Money,
    /// Seconds the feature cache saved (estimated; 0 without a cache).
    pub cache_saved_seconds: f64,
    /// Energy the feature cache saved, at the run's mean power.
    pub cache_saved_wh: f64,
}

impl RunCost {
    pub fn new(
        options: &CostOptions,
        seconds: f64,
        phases: Phases,
        flops: FlopCount,
        peak: Peak,
        reading: EnergyReading,
        cache_saved_seconds: f64,
    ) -> Result<Self> {
        let intensity = options.intensity()?;
        let prices = options.prices();
        let energy = Energy::from(&reading);
        let hours = seconds / 3600.0;
        let electricity = energy.kwh * prices.per_kwh;
        let machine = hours * prices.per_hour;
        let mean_watts = if seconds > 0.0 {
            energy.kwh * 3.6e6 / seconds
        } else {
            0.0
        };
        let safe_div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Ok(Self {
            seconds,
            phases,
            flops,
            flops_total: flops.total(),
            peak_flops_per_s: peak.flops_per_s,
            peak_how: peak.how,
            mfu: safe_div(flops.total(), seconds * peak.flops_per_s),
            train_mfu: safe_div(flops.train, phases.train * peak.flops_per_s),
            co2_kg: carbon::co2_kg(energy.kwh, &intensity),
            intensity: IntensityUsed {
                g_per_kwh: intensity.g_per_kwh,
                code: intensity.code.clone(),
                name: intensity.name.clone(),
                source: intensity.source.to_string(),
                year: intensity.year,
            },
            money: Money {
                total: electricity + machine,
                electricity,
                machine,
                per_kwh: prices.per_kwh,
                per_hour: prices.per_hour,
                currency: prices.currency.to_string(),
            },
            energy,
            cache_saved_seconds: cache_saved_seconds.max(0.0),
            cache_saved_wh: cache_saved_seconds.max(0.0) * mean_watts / 3600.0,
        })
    }

    /// Writes `cost.json` and appends a row to `emissions.csv` (CodeCarbon's
    /// columns) in `dir`.
    pub fn save(&self, dir: &Path, options: &CostOptions) -> Result<()> {
        write_json_atomic(&dir.join("cost.json"), self)?;
        let path = dir.join("emissions.csv");
        carbon::append_emissions_csv(&path, &self.emissions_row(options, dir)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }

    /// This run as a row of CodeCarbon's `emissions.csv`.
    pub fn emissions_row(&self, options: &CostOptions, dir: &Path) -> Result<carbon::EmissionsRow> {
        let intensity = options.intensity()?;
        let e = &self.energy;
        let mut row = carbon::EmissionsRow {
            experiment_id: dir.display().to_string(),
            duration: self.seconds,
            cpu_power: e.cpu_watts,
            gpu_power: e.gpu_watts.unwrap_or(0.0),
            ram_power: e.ram_watts,
            // CodeCarbon's component energies include PUE; its powers do not.
            cpu_energy: e.cpu_kwh * e.pue,
            gpu_energy: e.gpu_kwh.unwrap_or(0.0) * e.pue,
            ram_energy: e.ram_kwh * e.pue,
            energy_consumed: e.kwh,
            cpu_count: e.cpu_count,
            cpu_model: e.cpu_model.clone(),
            gpu_count: usize::from(e.gpu_kwh.is_some()),
            gpu_model: e.gpu_model.clone().unwrap_or_default(),
            ram_total_size: e.ram_total_gb,
            pue: e.pue,
            ..Default::default()
        };
        row.set_location(&intensity);
        row.set_emissions(&intensity);
        Ok(row)
    }

    /// Lines for the end of a run.
    pub fn summary_lines(&self) -> Vec<String> {
        let p = &self.phases;
        let mut lines = vec![format!(
            "time {:.1} s: data {:.1}, load {:.1}, feature cache {:.1}, train {:.1}, validation {:.1}, checkpoints {:.1}, export {:.1}",
            self.seconds, p.data, p.load, p.feature_cache, p.train, p.eval, p.checkpoint, p.export
        )];
        lines.push(format!(
            "compute {:.3} TFLOP (train {:.3}, validation {:.3}, feature cache {:.3}); MFU {:.1}% overall, {:.1}% in training, of {:.1} GFLOP/s peak ({})",
            self.flops_total / 1e12,
            self.flops.train / 1e12,
            self.flops.eval / 1e12,
            self.flops.feature_cache / 1e12,
            100.0 * self.mfu,
            100.0 * self.train_mfu,
            self.peak_flops_per_s / 1e9,
            self.peak_how
        ));
        let e = &self.energy;
        lines.push(format!(
            "energy {:.3} Wh, {}: CPU {} | RAM {}{}; PUE {:.2}",
            e.kwh * 1000.0,
            if e.measured { "measured" } else { "estimated" },
            e.cpu_how,
            e.ram_how,
            e.gpu_how
                .as_ref()
                .map(|g| format!(" | GPU {g}"))
                .unwrap_or_default(),
            e.pue
        ));
        lines.push(format!(
            "CO2 {:.3} g at {:.0} gCO2e/kWh ({}, {} {}); money {:.5} {} ({:.3} {}/kWh, {:.2} {}/h)",
            self.co2_kg * 1000.0,
            self.intensity.g_per_kwh,
            self.intensity.name,
            self.intensity.source,
            self.intensity.year,
            self.money.total,
            self.money.currency,
            self.money.per_kwh,
            self.money.currency,
            self.money.per_hour,
            self.money.currency
        ));
        if self.cache_saved_seconds > 0.0 {
            lines.push(format!(
                "the feature cache saved about {:.1} s and {:.3} Wh",
                self.cache_saved_seconds, self.cache_saved_wh
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::energy::{Component, cpu_estimate, ram_estimate};

    /// An estimated reading: 100 s on a 2-vCPU "AMD EPYC" with 24 GiB, the
    /// process using 90% of the CPUs and 0.5 GiB.
    fn estimated_reading() -> EnergyReading {
        let cpu = cpu_estimate("AMD EPYC", 2, 0.9);
        let ram = ram_estimate(0.5, 24.0, false);
        let part = |watts: f64| Component {
            kwh: watts * 100.0 / 3.6e6,
            mean_watts: watts,
            measured: false,
            how: "estimated".into(),
        };
        let (c, r) = (part(cpu.watts), part(ram.watts));
        EnergyReading {
            seconds: 100.0,
            total_kwh: c.kwh + r.kwh,
            cpu: c,
            gpu: None,
            ram: r,
            pue: 1.0,
            cpu_model: "AMD EPYC".into(),
            gpu_model: None,
            cpu_count: 2,
            ram_total_gb: 24.0,
            cpu_share: Some(0.9),
            cpu_estimate: Some(cpu),
            ram_estimate: Some(ram),
        }
    }

    #[test]
    fn cost_json_shows_the_parts_of_an_estimate() {
        let energy = Energy::from(&estimated_reading());
        let json = serde_json::to_value(&energy).unwrap();
        assert_eq!(json["cpu_share"], 0.9);
        let cpu = &json["cpu_estimate"];
        assert_eq!(cpu["tdp_w"], 8.0);
        assert_eq!(cpu["full_load_w"], 8.0);
        assert_eq!(cpu["cpu_share"], 0.9);
        assert_eq!(cpu["watts"], 7.2);
        assert_eq!(cpu["table_model"], serde_json::Value::Null);
        assert!(
            cpu["tdp_source"]
                .as_str()
                .unwrap()
                .contains("not in the shipped TDP table"),
            "{cpu}"
        );
        let ram = &json["ram_estimate"];
        assert_eq!(ram["machine_gib"], 24.0);
        assert_eq!(ram["machine_dimms"], 4);
        assert_eq!(ram["machine_w"], 20.0);
        assert!((ram["watts"].as_f64().unwrap() - 20.0 * 0.5 / 24.0).abs() < 1e-12);
        assert!((json["ram_watts"].as_f64().unwrap() - 20.0 * 0.5 / 24.0).abs() < 1e-12);
        // It reads back as it was written.
        let back: Energy = serde_json::from_value(json).unwrap();
        assert_eq!(back, energy);
    }

    #[test]
    fn peak_gflops_overrides_the_device_peak() {
        let device = burn::tensor::Device::default();
        let options = CostOptions {
            peak_gflops: Some(250.0),
            ..CostOptions::default()
        };
        options.check().unwrap();
        let p = options.peak(&device).unwrap();
        assert_eq!(p.flops_per_s, 250e9);
        assert_eq!(p.how, "--peak-gflops 250");
        let bad = CostOptions {
            peak_gflops: Some(-3.0),
            ..CostOptions::default()
        };
        let e = bad.check().unwrap_err().to_string();
        assert!(e.contains("--peak-gflops -3"), "{e}");
        // Options saved before the flag existed still read.
        let old: CostOptions = serde_json::from_str(r#"{"pue": 1.0}"#).unwrap();
        assert_eq!(old.peak_gflops, None);
    }

    #[test]
    fn run_cost_energy_is_time_x_watts() {
        let cost = RunCost::new(
            &CostOptions {
                country: Some("FR".into()),
                ..CostOptions::default()
            },
            100.0,
            Phases::default(),
            FlopCount::default(),
            Peak {
                flops_per_s: 1e9,
                how: "test".into(),
            },
            estimated_reading(),
            0.0,
        )
        .unwrap();
        let watts = 7.2 + 20.0 * 0.5 / 24.0;
        // (7.2 W + 0.417 W) x 100 s = 761.7 J = 0.2116 Wh.
        assert!((cost.energy.kwh * 3.6e6 - watts * 100.0).abs() < 1e-9);
        // At 56 g/kWh: 0.01185 g.
        assert!((cost.co2_kg - cost.energy.kwh * 56.0 / 1000.0).abs() < 1e-15);
        let row = cost
            .emissions_row(&CostOptions::default(), Path::new("run"))
            .unwrap();
        assert_eq!(row.cpu_power, 7.2);
        assert!((row.ram_power - 20.0 * 0.5 / 24.0).abs() < 1e-12);
    }
}
