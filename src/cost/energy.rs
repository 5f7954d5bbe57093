//! The energy a run used: measured where the machine allows it, estimated
//! otherwise, and every figure says which of the two it is and how it was
//! obtained.
//!
//! * **CPU** — measured from Linux powercap RAPL (`/sys/class/powercap/
//!   intel-rapl:N`, one zone per package; AMD exposes the same `intel-rapl`
//!   names). The counters are machine-wide: they include every process on
//!   the socket, not only this one. Since 2020 (CVE-2020-8694) `energy_uj` is
//!   readable by root only on most distributions; when it cannot be read the
//!   CPU is estimated as TDP x this process's CPU share (see
//!   [`cpu_estimate`]) and the reading says why.
//! * **RAM** — measured from a RAPL `dram` zone when one is exposed and
//!   readable; otherwise estimated as the machine's RAM power by CodeCarbon's
//!   DIMM model x the share of the machine's memory this process holds (see
//!   [`ram_estimate`]).
//! * **GPU** — only when a GPU index is requested: NVML is loaded at run time
//!   (`libnvidia-ml.so.1`, through the `nvml-wrapper` crate, so nothing
//!   NVIDIA is needed to build); the board's energy counter
//!   (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) is used when
//!   supported, else `nvmlDeviceGetPowerUsage` is sampled and integrated.
//!   Without NVML the GPU is estimated from its TDP (see [`gpu_tdp`]).
//!
//! # The estimate, and CodeCarbon
//!
//! Without RAPL, energy = (CPU watts + RAM watts) x wall seconds, where
//!
//! * CPU watts = TDP x (logical CPUs / chip threads) x CPU share, the share
//!   being this process's CPU seconds (`/proc/self/stat` utime + stime) over
//!   wall seconds x logical CPUs. This is CodeCarbon's "process" tracking
//!   mode (TDP x the process's normalised CPU load), followed exactly but
//!   for two differences: the TDP is prorated when the machine shows fewer
//!   (a VM slice) or more (several sockets) logical CPUs than one chip has,
//!   since CodeCarbon would charge a 2-vCPU slice of a 128-thread EPYC the
//!   whole chip's TDP; and an unknown CPU gets
//!   [`UNKNOWN_CPU_WATTS_PER_THREAD`] per logical CPU rather than
//!   CodeCarbon's flat 85 W. The CPU energy is therefore the CPU-seconds
//!   used times a constant: TDP / chip threads.
//! * RAM watts = P(machine memory) x process memory / machine memory, with
//!   P CodeCarbon 3.x's DIMM model ([`ram_watts`]: 5 W per DIMM on x86, the
//!   DIMM count guessed from the memory size, at least 10 W). CodeCarbon's
//!   "process" mode instead feeds the process's resident memory to the same
//!   model, floor included, so any process under 16 GiB is charged 10 W,
//!   the power of two whole DIMMs: on a small VM that floor outweighs the
//!   CPU and makes the energy a constant times wall time. Here the floor
//!   applies to the machine, whose DIMMs it describes, and the process is
//!   charged the share of them its memory occupies, as its CPU share charges
//!   it for the CPU.
//!
//! A background thread samples every [`MeterOptions::interval`] (1 s by
//! default): a 32-bit RAPL counter (about 2^32 uJ = 4295 J) wraps in well
//! under a minute at 100 W, and one wrap per sampling interval can be
//! corrected (see [`counter_delta`]), several cannot.
//!
//! ```no_run
//! # use headstart::cost::energy::{EnergyMeter, MeterOptions};
//! let meter = EnergyMeter::start(MeterOptions { gpu: Some(0), ..Default::default() });
//! // ... train ...
//! let reading = meter.stop();
//! println!("{}", reading.summary());
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::data;

/// Joules in one kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3.6e6;

/// Watts per logical CPU assumed for a CPU model missing from the TDP table.
///
/// The shipped table's TDP per hardware thread runs from about 1.4 W (AMD
/// EPYC 9754, 128 cores) through 3-5 W (cloud Xeons, desktop Core i9) to
/// 6.7 W (Xeon Platinum 8124M); its median is 3.5 W. Unknown CPUs get 4 W,
/// a little above the median, so that an unrecognised machine is not made to
/// look cheaper than a recognised one. (CodeCarbon instead assumes a flat
/// 85 W TDP for an unknown CPU, whatever its size.)
pub const UNKNOWN_CPU_WATTS_PER_THREAD: f64 = 4.0;

/// The NVML library opened when a GPU is requested.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// Watts per DIMM in CodeCarbon's RAM model on x86.
pub const RAM_WATTS_PER_DIMM_X86: f64 = 5.0;
/// Watts per DIMM in CodeCarbon's RAM model on ARM.
pub const RAM_WATTS_PER_DIMM_ARM: f64 = 1.5;

/// Kilowatt-hours from joules (kWh = J / 3.6e6).
pub fn kwh_from_joules(joules: f64) -> f64 {
    joules / JOULES_PER_KWH
}

/// The increase of a monotonic counter that wraps to 0 after `max_range`
/// (RAPL's `max_energy_range_uj`). `end < start` means it wrapped once:
/// the increase is `max_range - start + end`. With `max_range` unknown (0)
/// the part before the wrap is lost and `end` is returned.
pub fn counter_delta(start: u64, end: u64, max_range: u64) -> u64 {
    if end >= start {
        end - start
    } else {
        max_range.saturating_sub(start).saturating_add(end)
    }
}

// ---------------------------------------------------------------------------
// Shipped TDP tables (src/cost/data/cpu_tdp.csv, gpu_tdp.csv)
// ---------------------------------------------------------------------------

/// A CPU from the shipped table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSpec {
    /// The model as it is shown, e.g. "AMD EPYC 7B13".
    pub name: &'static str,
    /// Thermal design power of one chip (socket), watts.
    pub tdp_w: f64,
    /// Hardware threads of one chip.
    pub threads: u32,
}

/// Where the CPU table lives in the source tree, for messages.
pub const CPU_TDP_FILE: &str = "src/cost/data/cpu_tdp.csv";
/// Where the GPU table lives in the source tree, for messages.
pub const GPU_TDP_FILE: &str = "src/cost/data/gpu_tdp.csv";

/// A row of `cpu_tdp.csv`; its header comment names the sources.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct CpuRow {
    /// Lower-case text matched as a token in the normalised `model name`.
    key: String,
    name: String,
    tdp_w: f64,
    threads: u32,
}

/// A row of `gpu_tdp.csv`; its header comment names the sources.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct GpuRow {
    key: String,
    name: String,
    tdp_w: f64,
}

/// A key must be written as [`normalise`] leaves a name, or it never matches.
fn check_key(key: &str) -> Result<(), String> {
    data::non_empty("key", key)?;
    if normalise(key) == key {
        Ok(())
    } else {
        Err(format!(
            "key {key:?} is not normalised (lower case, single spaces): {:?}",
            normalise(key)
        ))
    }
}

fn parse_cpu_table(text: &str) -> Result<Vec<CpuRow>, String> {
    let rows = data::parse_csv(CPU_TDP_FILE, text, |r: &CpuRow| {
        check_key(&r.key)?;
        data::non_empty("name", &r.name)?;
        data::positive("tdp_w", r.tdp_w)?;
        data::positive("threads", f64::from(r.threads))
    })?;
    data::unique(CPU_TDP_FILE, &rows, |r| r.key.clone())?;
    Ok(rows)
}

fn parse_gpu_table(text: &str) -> Result<Vec<GpuRow>, String> {
    let rows = data::parse_csv(GPU_TDP_FILE, text, |r: &GpuRow| {
        check_key(&r.key)?;
        data::non_empty("name", &r.name)?;
        data::positive("tdp_w", r.tdp_w)
    })?;
    data::unique(GPU_TDP_FILE, &rows, |r| r.key.clone())?;
    Ok(rows)
}

/// The shipped CPU table, parsed on first use (the tests check that it
/// parses).
static CPU_TABLE: LazyLock<Vec<CpuRow>> =
    LazyLock::new(|| parse_cpu_table(data::CPU_TDP_CSV).unwrap_or_else(|e| panic!("{e}")));

/// The shipped GPU table, parsed on first use.
static GPU_TABLE: LazyLock<Vec<GpuRow>> =
    LazyLock::new(|| parse_gpu_table(data::GPU_TDP_CSV).unwrap_or_else(|e| panic!("{e}")));

/// Lower case, "(R)" / "(TM)" dropped, runs of blanks collapsed:
/// "Intel(R) Xeon(R) Platinum 8375C CPU" -> "intel xeon platinum 8375c cpu".
fn normalise(name: &str) -> String {
    let lower = name.to_lowercase().replace("(r)", " ").replace("(tm)", " ");
    lower.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `key` occurs in `hay` as a token: not glued to a letter or digit
/// before it, and, when it ends in a digit, not followed by another digit
/// (so "a10" does not match "a100", nor "l4" match "l40s").
fn has_token(hay: &str, key: &str) -> bool {
    let ends_in_digit = key.ends_with(|c: char| c.is_ascii_digit());
    hay.match_indices(key).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + key.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric())
            && !(ends_in_digit && after.is_some_and(|c| c.is_ascii_digit()))
    })
}

/// The table row whose key matches `name`, the longest key winning.
fn best_row<'a, T>(name: &str, table: &'a [T], key: impl Fn(&T) -> &str) -> Option<&'a T> {
    let hay = normalise(name);
    table
        .iter()
        .filter(|row| has_token(&hay, key(row)))
        .max_by_key(|row| key(row).len())
}

/// The shipped table's entry for a CPU `model name` (from /proc/cpuinfo),
/// matched case-insensitively on a distinctive substring such as "EPYC 7B13"
/// or "i9-13900K"; the longest matching key wins.
pub fn cpu_spec(model: &str) -> Option<CpuSpec> {
    best_row(model, &CPU_TABLE, |row| &row.key).map(|row| CpuSpec {
        name: &row.name,
        tdp_w: row.tdp_w,
        threads: row.threads,
    })
}

/// A CPU's TDP in watts and the table name it matched, if the model is in
/// the shipped table.
pub fn cpu_tdp(model: &str) -> Option<(f64, &'static str)> {
    cpu_spec(model).map(|spec| (spec.tdp_w, spec.name))
}

/// A GPU's board power in watts from its device name ("NVIDIA H100 80GB
/// HBM3", "Tesla T4", ...), if the model is in the shipped table.
pub fn gpu_tdp(name: &str) -> Option<f64> {
    gpu_row(name).map(|row| row.tdp_w)
}

fn gpu_row(name: &str) -> Option<&'static GpuRow> {
    best_row(name, &GPU_TABLE, |row| &row.key)
}

// ---------------------------------------------------------------------------
// CPU estimate
// ---------------------------------------------------------------------------

/// How an estimated CPU power was derived (saved in `cost.json`):
/// `watts` = `full_load_w` x `cpu_share`, `full_load_w` = `tdp_w` x
/// `logical_cpus` / `chip_threads`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuEstimate {
    /// The row of the shipped table the CPU matched, e.g. "AMD EPYC 7B13";
    /// `None` when it is not in the table.
    pub table_model: Option<String>,
    /// Where the TDP comes from: the shipped table and its source, or the
    /// per-thread assumption for a CPU that is not in it.
    pub tdp_source: String,
    /// TDP of one chip, W (unknown CPU: [`UNKNOWN_CPU_WATTS_PER_THREAD`] x
    /// logical CPUs).
    pub tdp_w: f64,
    /// Hardware threads of that chip (unknown CPU: the logical CPUs).
    pub chip_threads: u32,
    /// Logical CPUs this machine shows.
    pub logical_cpus: usize,
    /// Watts with every logical CPU busy: the TDP prorated to the logical
    /// CPUs this machine shows.
    pub full_load_w: f64,
    /// This process's CPU seconds over (wall seconds x logical CPUs), 0 to 1.
    pub cpu_share: f64,
    /// `full_load_w` x `cpu_share`.
    pub watts: f64,
}

impl CpuEstimate {
    /// The derivation in words, e.g. "TDP 225 W (AMD EPYC 7B13, shipped
    /// table) prorated to ... x 23.5% CPU share of 2 logical CPUs = 0.83 W".
    pub fn how(&self) -> String {
        let pct = self.cpu_share * 100.0;
        let (n, watts) = (self.logical_cpus, self.watts);
        if let Some(model) = &self.table_model {
            let prorated = if n as u64 == u64::from(self.chip_threads) {
                String::new()
            } else {
                format!(
                    " prorated to the {n} of its {} threads this machine shows = {:.2} W,",
                    self.chip_threads, self.full_load_w
                )
            };
            format!(
                "TDP {} W ({model}, shipped table){prorated} x {pct:.1}% CPU share of {n} \
                 logical CPUs = {watts:.2} W",
                self.tdp_w
            )
        } else {
            format!(
                "{UNKNOWN_CPU_WATTS_PER_THREAD} W per logical CPU x {n} ({}) x {pct:.1}% CPU \
                 share = {watts:.2} W",
                self.tdp_source
            )
        }
    }
}

/// The CPU power of a process that used `cpu_share` of the machine's
/// `logical_cpus` (share = process CPU seconds / (wall seconds x logical
/// CPUs), clamped to 0..1).
///
/// Known model: TDP x share, as CodeCarbon's process mode; but when the
/// machine shows a different number of logical CPUs than one chip has (a VM
/// slice sees fewer, a two-socket host more), the TDP is first prorated by
/// logical CPUs / chip threads, so a 2-vCPU slice of a 128-thread EPYC is
/// charged 2/128 of its TDP at full load, not all of it.
/// Unknown model: [`UNKNOWN_CPU_WATTS_PER_THREAD`] x logical CPUs x share.
pub fn cpu_estimate(model: &str, logical_cpus: usize, cpu_share: f64) -> CpuEstimate {
    let n = logical_cpus.max(1);
    let cpu_share = if cpu_share.is_finite() {
        cpu_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (table_model, tdp_source, tdp_w, chip_threads) = match cpu_spec(model) {
        Some(spec) => (
            Some(spec.name.to_string()),
            format!("{CPU_TDP_FILE} (vendors' published TDP): {}", spec.name),
            spec.tdp_w,
            spec.threads.max(1),
        ),
        None => (
            None,
            format!("CPU {model:?} is not in the shipped TDP table {CPU_TDP_FILE}"),
            UNKNOWN_CPU_WATTS_PER_THREAD * n as f64,
            u32::try_from(n).unwrap_or(u32::MAX),
        ),
    };
    let full_load_w = tdp_w * n as f64 / f64::from(chip_threads);
    CpuEstimate {
        table_model,
        tdp_source,
        tdp_w,
        chip_threads,
        logical_cpus: n,
        full_load_w,
        cpu_share,
        watts: full_load_w * cpu_share,
    }
}

/// Mean CPU watts estimated for a process that used `cpu_share` of the
/// machine's `logical_cpus`, and how it was derived (see [`cpu_estimate`]).
pub fn estimate_cpu_watts(model: &str, logical_cpus: usize, cpu_share: f64) -> (f64, String) {
    let e = cpu_estimate(model, logical_cpus, cpu_share);
    (e.watts, e.how())
}

// ---------------------------------------------------------------------------
// RAM estimate
// ---------------------------------------------------------------------------

/// How many DIMMs CodeCarbon 3.x assumes for `gib` GiB of memory: 1 up to
/// 2 GiB, 2 up to 16, 4 up to 64, 8 up to 128; above that, the largest common
/// DIMM size (128, 64, 32, 16, 8 or 4 GiB) that gives at least 8 DIMMs, at
/// most 32 DIMMs.
pub fn ram_dimms(gib: f64) -> u32 {
    if gib <= 2.0 {
        return 1;
    }
    if gib <= 16.0 {
        return 2;
    }
    if gib <= 64.0 {
        return 4;
    }
    if gib <= 128.0 {
        return 8;
    }
    for size in [128.0, 64.0, 32.0, 16.0, 8.0, 4.0] {
        if size <= gib / 8.0 {
            return ((gib / size).ceil() as u32).min(32);
        }
    }
    8
}

/// The least RAM power CodeCarbon 3.x assigns: two DIMMs on x86 (10 W), 3 W
/// on ARM.
pub fn ram_floor_watts(arm: bool) -> f64 {
    if arm {
        3.0
    } else {
        2.0 * RAM_WATTS_PER_DIMM_X86
    }
}

/// The power of `gib` GiB of memory by CodeCarbon 3.x's model
/// (`codecarbon/external/ram.py`, release 3.3): 5 W per DIMM on x86 (1.5 W
/// on ARM) for the first 4 DIMMs, 90% of that for DIMMs 5-8, 80% for 9-16
/// and 70% beyond, never below [`ram_floor_watts`]. It replaced the older
/// rule of 3 W per 8 GB (0.375 W/GB). It describes the DIMMs of a machine
/// with that much memory; [`ram_estimate`] applies it to the machine and
/// charges the process its share.
pub fn ram_watts(gib: f64, arm: bool) -> f64 {
    let per_dimm = if arm {
        RAM_WATTS_PER_DIMM_ARM
    } else {
        RAM_WATTS_PER_DIMM_X86
    };
    let watts: f64 = (1..=ram_dimms(gib))
        .map(|i| {
            let taper = match i {
                1..=4 => 1.0,
                5..=8 => 0.9,
                9..=16 => 0.8,
                _ => 0.7,
            };
            per_dimm * taper
        })
        .sum();
    watts.max(ram_floor_watts(arm))
}

/// How an estimated RAM power was derived (saved in `cost.json`):
/// `watts` = `machine_w` x `share`, `share` = `process_gib` / `machine_gib`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RamEstimate {
    /// The process's resident memory (VmRSS), averaged over the run, GiB.
    pub process_gib: f64,
    /// The machine's memory (MemTotal), GiB; 0 when unknown.
    pub machine_gib: f64,
    /// DIMMs CodeCarbon's heuristic assumes for `machine_gib` (for
    /// `process_gib` when the machine's memory is unknown).
    pub machine_dimms: u32,
    /// W per DIMM: 5 on x86, 1.5 on ARM.
    pub watts_per_dimm: f64,
    /// The least the model gives: 10 W on x86 (two DIMMs), 3 W on ARM.
    pub floor_w: f64,
    /// The whole machine's RAM power by CodeCarbon's model ([`ram_watts`]).
    pub machine_w: f64,
    /// `process_gib` / `machine_gib`, at most 1 (1 when the machine's
    /// memory is unknown).
    pub share: f64,
    /// `machine_w` x `share`.
    pub watts: f64,
}

impl RamEstimate {
    /// The derivation in words.
    pub fn how(&self) -> String {
        if self.machine_gib > 0.0 {
            format!(
                "CodeCarbon 3.x DIMM model for the machine's {:.2} GiB: {} DIMM(s) x {} W, at \
                 least {} W = {:.1} W, x {:.2}% of it held by this process (mean resident \
                 {:.3} GiB) = {:.3} W",
                self.machine_gib,
                self.machine_dimms,
                self.watts_per_dimm,
                self.floor_w,
                self.machine_w,
                self.share * 100.0,
                self.process_gib,
                self.watts
            )
        } else {
            format!(
                "machine memory unknown: CodeCarbon 3.x DIMM model applied to this process's \
                 mean resident {:.3} GiB, as CodeCarbon's process mode does (at least {} W, an \
                 upper bound) = {:.3} W",
                self.process_gib, self.floor_w, self.watts
            )
        }
    }
}

/// The RAM power of a process holding `process_gib` of resident memory on a
/// machine with `machine_gib` (0 = unknown): the machine's RAM power by
/// CodeCarbon's DIMM model ([`ram_watts`]) x the share of the machine's
/// memory the process holds. CodeCarbon's own process mode applies the DIMM
/// model, with its 10 W floor, to the process's memory; see the module
/// documentation for why this differs. With the machine's memory unknown,
/// CodeCarbon's process-mode figure is used.
pub fn ram_estimate(process_gib: f64, machine_gib: f64, arm: bool) -> RamEstimate {
    let process_gib = if process_gib.is_finite() {
        process_gib.max(0.0)
    } else {
        0.0
    };
    let known = machine_gib.is_finite() && machine_gib > 0.0;
    let machine_gib = if known { machine_gib } else { 0.0 };
    let (sized, share) = if known {
        (machine_gib, (process_gib / machine_gib).min(1.0))
    } else {
        (process_gib, 1.0)
    };
    let machine_w = ram_watts(sized, arm);
    RamEstimate {
        process_gib,
        machine_gib,
        machine_dimms: ram_dimms(sized),
        watts_per_dimm: if arm {
            RAM_WATTS_PER_DIMM_ARM
        } else {
            RAM_WATTS_PER_DIMM_X86
        },
        floor_w: ram_floor_watts(arm),
        machine_w,
        share,
        watts: machine_w * share,
    }
}

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// What to measure and how.
#[derive(Clone, Debug, PartialEq)]
pub struct MeterOptions {
    /// Power usage effectiveness of the site, multiplied into the total
    /// (1.0 = no cooling/distribution overhead; clouds report about 1.1).
    pub pue: f64,
    /// The GPU to measure, in NVML's (PCI bus) order; `None` measures none
    /// and never loads NVML.
    pub gpu: Option<u32>,
    /// The GPU's name for the TDP estimate when NVML cannot be loaded (it is
    /// otherwise read from NVML or /proc/driver/nvidia).
    pub gpu_name: Option<String>,
    /// Where powercap lives: /sys/class/powercap.
    pub powercap_root: PathBuf,
    /// Where the CPU model and count are read: /proc/cpuinfo.
    pub cpuinfo: PathBuf,
    /// How often the background thread samples the counters: 1 s.
    pub interval: Duration,
}

impl Default for MeterOptions {
    fn default() -> Self {
        MeterOptions {
            pue: 1.0,
            gpu: None,
            gpu_name: None,
            powercap_root: PathBuf::from("/sys/class/powercap"),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
            interval: Duration::from_secs(1),
        }
    }
}

/// One part of the machine: its energy before PUE.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub kwh: f64,
    /// kWh over the reading's seconds, in watts.
    pub mean_watts: f64,
    /// Read from a hardware counter (true) or estimated (false).
    pub measured: bool,
    /// How, for a human: "measured: RAPL package-0 (...)" or "estimated: ...".
    pub how: String,
}

/// Energy so far (from [`EnergyMeter::snapshot`]) or in all (from
/// [`EnergyMeter::stop`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EnergyReading {
    /// Wall-clock seconds since the meter started.
    pub seconds: f64,
    pub cpu: Component,
    /// Present when a GPU was requested.
    pub gpu: Option<Component>,
    pub ram: Component,
    pub pue: f64,
    /// (cpu + gpu + ram) x pue, kWh.
    pub total_kwh: f64,
    pub cpu_model: String,
    pub gpu_model: Option<String>,
    /// Logical CPUs of the machine.
    pub cpu_count: usize,
    /// The machine's memory, GiB (CodeCarbon's `ram_total_size`).
    pub ram_total_gb: f64,
    /// This process's CPU seconds over (wall seconds x logical CPUs), as
    /// measured from /proc/self/stat; `None` when it cannot be read.
    pub cpu_share: Option<f64>,
    /// How the CPU figure was estimated; `None` when RAPL measured it.
    pub cpu_estimate: Option<CpuEstimate>,
    /// How the RAM figure was estimated; `None` when RAPL measured it.
    pub ram_estimate: Option<RamEstimate>,
}

impl EnergyReading {
    /// True when every component (CPU, RAM and, if requested, GPU) was
    /// measured rather than estimated.
    pub fn measured(&self) -> bool {
        self.cpu.measured && self.ram.measured && self.gpu.as_ref().is_none_or(|g| g.measured)
    }

    /// One line for a terminal, e.g.
    /// `energy 12.34 Wh in 5m02s = (CPU 9.10 Wh estimated, 108.5 W + RAM
    /// 0.84 Wh estimated, 10.0 W) x PUE 1.00`.
    pub fn summary(&self) -> String {
        let part = |label: &str, c: &Component| {
            format!(
                "{label} {} {}, {:.1} W",
                fmt_energy(c.kwh, self.total_kwh),
                if c.measured { "measured" } else { "estimated" },
                c.mean_watts
            )
        };
        let mut parts = vec![part("CPU", &self.cpu)];
        if let Some(gpu) = &self.gpu {
            parts.push(part("GPU", gpu));
        }
        parts.push(part("RAM", &self.ram));
        format!(
            "energy {} in {} = ({}) x PUE {:.2}",
            fmt_energy(self.total_kwh, self.total_kwh),
            fmt_duration(self.seconds),
            parts.join(" + "),
            self.pue
        )
    }
}

/// Formats kWh in the unit that suits `scale` (the total): kWh from 1 kWh
/// up, Wh from 1 Wh up, joules below, so that one line uses one unit.
fn fmt_energy(kwh: f64, scale: f64) -> String {
    if scale.abs() >= 1.0 {
        format!("{kwh:.3} kWh")
    } else if scale.abs() >= 1e-3 {
        format!("{:.2} Wh", kwh * 1000.0)
    } else {
        format!("{:.1} J", kwh * JOULES_PER_KWH)
    }
}

fn fmt_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, _) => format!("{:.1}s", seconds.max(0.0)),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

// ---------------------------------------------------------------------------
// The meter
// ---------------------------------------------------------------------------

/// A running energy measurement: [`EnergyMeter::start`] it, read it any time
/// with [`EnergyMeter::snapshot`], end it with [`EnergyMeter::stop`]
/// (dropping it also stops the sampler thread).
pub struct EnergyMeter {
    sampler: Arc<Mutex<Sampler>>,
    stop_tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EnergyMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnergyMeter")
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

fn lock(sampler: &Mutex<Sampler>) -> MutexGuard<'_, Sampler> {
    sampler
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EnergyMeter {
    /// Probes RAPL (and NVML when `opts.gpu` is set), takes the starting
    /// readings and starts the sampler thread. Never fails: whatever cannot
    /// be measured is estimated.
    pub fn start(opts: MeterOptions) -> EnergyMeter {
        let interval = opts.interval.max(Duration::from_millis(1));
        let sampler = Arc::new(Mutex::new(Sampler::new(&opts)));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let shared = Arc::clone(&sampler);
        let thread = std::thread::Builder::new()
            .name("energy-meter".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    lock(&shared).sample();
                }
            })
            .ok();
        EnergyMeter {
            sampler,
            stop_tx: Some(stop_tx),
            thread,
        }
    }

    /// The energy so far. Takes one extra sample (a few small file reads),
    /// so it is cheap and current.
    pub fn snapshot(&self) -> EnergyReading {
        let mut sampler = lock(&self.sampler);
        sampler.sample();
        sampler.reading()
    }

    /// Stops and joins the sampler thread, takes a last sample and returns
    /// the total.
    pub fn stop(mut self) -> EnergyReading {
        self.halt();
        self.snapshot()
    }

    fn halt(&mut self) {
        drop(self.stop_tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EnergyMeter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Runs `work` under a meter and returns its result with the energy it took.
pub fn measure<T>(opts: MeterOptions, work: impl FnOnce() -> T) -> (T, EnergyReading) {
    let meter = EnergyMeter::start(opts);
    let out = work();
    (out, meter.stop())
}

// ---------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------

/// One RAPL zone's counter.
#[derive(Debug)]
struct RaplZone {
    label: String,
    energy_uj: PathBuf,
    max_range: u64,
    last: u64,
    total_uj: u128,
    wraps: u32,
}

impl RaplZone {
    /// Reads the counter and adds the increase since the last read. A failed
    /// read is skipped: the next one covers the gap (unless it wrapped twice).
    fn read(&mut self) {
        if let Ok(now) = read_u64(&self.energy_uj) {
            if now < self.last {
                self.wraps += 1;
            }
            self.total_uj += u128::from(counter_delta(self.last, now, self.max_range));
            self.last = now;
        }
    }
}

/// Where a CPU or RAM figure comes from.
#[derive(Debug)]
enum Source {
    Rapl(Vec<RaplZone>),
    /// Estimated; the text says why it was not measured ("" = no reason to
    /// give).
    Estimate(String),
}

#[derive(Debug)]
enum Gpu {
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

struct Sampler {
    started: Instant,
    last_at: Instant,
    pue: f64,
    cpu_model: String,
    cpu_count: usize,
    ram_total_gb: f64,
    arm: bool,
    cpu: Source,
    ram: Source,
    gpu: Option<Gpu>,
    ticks_start: Option<u64>,
    ticks_per_s: f64,
    /// The latest resident memory read, GiB.
    rss_gib: f64,
    /// Resident memory integrated over the samples so far, GiB x s.
    rss_gib_seconds: f64,
}

impl Sampler {
    fn new(opts: &MeterOptions) -> Sampler {
        let cpuinfo = fs::read_to_string(&opts.cpuinfo).unwrap_or_default();
        let (cpu, ram) = probe_rapl(&opts.powercap_root);
        let gpu = opts
            .gpu
            .map(|index| open_gpu(NVML_LIBRARY, index, opts.gpu_name.as_deref()));
        let now = Instant::now();
        Sampler {
            started: now,
            last_at: now,
            pue: opts.pue,
            cpu_model: cpu_model(&cpuinfo),
            cpu_count: logical_cpus(&cpuinfo),
            ram_total_gb: read_mem_total_gib().unwrap_or(0.0),
            arm: cfg!(any(target_arch = "aarch64", target_arch = "arm")),
            cpu,
            ram,
            gpu,
            ticks_start: read_process_ticks(),
            ticks_per_s: clock_ticks_per_second(),
            rss_gib: read_rss_gib().unwrap_or(0.0),
            rss_gib_seconds: 0.0,
        }
    }

    fn sample(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_at).as_secs_f64();
        if let Source::Rapl(zones) = &mut self.cpu {
            zones.iter_mut().for_each(RaplZone::read);
        }
        match &mut self.ram {
            Source::Rapl(zones) => zones.iter_mut().for_each(RaplZone::read),
            Source::Estimate(_) => {
                // The memory read at the start of the interval holds for all of it.
                self.rss_gib_seconds += self.rss_gib * dt;
                if let Some(rss) = read_rss_gib() {
                    self.rss_gib = rss;
                }
            }
        }
        match &mut self.gpu {
            Some(Gpu::Energy { nvml, last_mj, .. }) => {
                if let Some(mj) = nvml.total_energy_mj() {
                    *last_mj = mj;
                }
            }
            Some(Gpu::Power {
                nvml,
                last_w,
                joules,
                ..
            }) => {
                let w = nvml.power_mw().map_or(*last_w, |mw| f64::from(mw) / 1000.0);
                *joules += (*last_w + w) / 2.0 * dt;
                *last_w = w;
            }
            Some(Gpu::Estimate { .. }) | None => {}
        }
        self.last_at = now;
    }

    /// CPU seconds (user + system) this process used since the meter started.
    fn cpu_seconds(&self) -> Option<f64> {
        let (start, now) = (self.ticks_start?, read_process_ticks()?);
        Some(now.saturating_sub(start) as f64 / self.ticks_per_s)
    }

    fn reading(&self) -> EnergyReading {
        let seconds = self.last_at.duration_since(self.started).as_secs_f64();
        let cpu_seconds = self.cpu_seconds();
        let cpu_share = cpu_seconds.map(|cs| cpu_share(cs, seconds, self.cpu_count));
        let (cpu, cpu_estimate) = match &self.cpu {
            Source::Rapl(zones) => (
                rapl_component(zones, seconds, "whole package, all processes"),
                None,
            ),
            Source::Estimate(why) => {
                let (c, e) =
                    estimated_cpu(&self.cpu_model, self.cpu_count, seconds, cpu_seconds, why);
                (c, Some(e))
            }
        };
        let (ram, ram_estimate) = match &self.ram {
            Source::Rapl(zones) => (rapl_component(zones, seconds, "whole machine"), None),
            Source::Estimate(why) => {
                let mean_gib = if seconds > 0.0 {
                    self.rss_gib_seconds / seconds
                } else {
                    self.rss_gib
                };
                let (c, e) = estimated_ram(mean_gib, self.ram_total_gb, self.arm, seconds, why);
                (c, Some(e))
            }
        };
        let gpu = self.gpu.as_ref().map(|g| gpu_component(g, seconds));
        let parts = cpu.kwh + ram.kwh + gpu.as_ref().map_or(0.0, |g| g.kwh);
        EnergyReading {
            seconds,
            cpu,
            gpu,
            ram,
            pue: self.pue,
            total_kwh: parts * self.pue,
            cpu_model: self.cpu_model.clone(),
            gpu_model: self.gpu.as_ref().and_then(gpu_name),
            cpu_count: self.cpu_count,
            ram_total_gb: self.ram_total_gb,
            cpu_share,
            cpu_estimate,
            ram_estimate,
        }
    }
}

/// CPU seconds over (wall seconds x logical CPUs); 0 for no time.
fn cpu_share(cpu_seconds: f64, seconds: f64, logical_cpus: usize) -> f64 {
    let wall_cpus = seconds * logical_cpus.max(1) as f64;
    if wall_cpus > 0.0 {
        cpu_seconds / wall_cpus
    } else {
        0.0
    }
}

/// The CPU part of a reading when RAPL cannot measure it: [`cpu_estimate`]'s
/// watts for the measured share, over `seconds`. Without the process's CPU
/// time every logical CPU is assumed busy (an upper bound). `why` says why
/// it was not measured.
fn estimated_cpu(
    model: &str,
    logical_cpus: usize,
    seconds: f64,
    cpu_seconds: Option<f64>,
    why: &str,
) -> (Component, CpuEstimate) {
    let (share, note) = match cpu_seconds {
        Some(cs) => (
            cpu_share(cs, seconds, logical_cpus),
            format!(" ({cs:.2} CPU-s in {seconds:.2} s)"),
        ),
        None => (
            1.0,
            " (process CPU time unreadable: all logical CPUs assumed busy, an upper bound)"
                .to_string(),
        ),
    };
    let e = cpu_estimate(model, logical_cpus, share);
    let c = Component {
        kwh: kwh_from_joules(e.watts * seconds),
        mean_watts: e.watts,
        measured: false,
        how: format!("{}: {}{note}", estimated(why), e.how()),
    };
    (c, e)
}

/// The RAM part of a reading when RAPL cannot measure it: [`ram_estimate`]
/// for the process's mean resident memory, over `seconds`. The estimate is
/// linear in the resident memory, so the mean (over time) gives the energy
/// of the whole run.
fn estimated_ram(
    mean_rss_gib: f64,
    machine_gib: f64,
    arm: bool,
    seconds: f64,
    why: &str,
) -> (Component, RamEstimate) {
    let e = ram_estimate(mean_rss_gib, machine_gib, arm);
    let c = Component {
        kwh: kwh_from_joules(e.watts * seconds),
        mean_watts: e.watts,
        measured: false,
        how: format!("{}: {}", estimated(why), e.how()),
    };
    (c, e)
}

fn estimated(why: &str) -> String {
    if why.is_empty() {
        "estimated".to_string()
    } else {
        format!("estimated ({why})")
    }
}

fn rapl_component(zones: &[RaplZone], seconds: f64, scope: &str) -> Component {
    let joules = zones.iter().map(|z| z.total_uj as f64).sum::<f64>() / 1e6;
    let wraps: u32 = zones.iter().map(|z| z.wraps).sum();
    let labels: Vec<&str> = zones.iter().map(|z| z.label.as_str()).collect();
    Component {
        kwh: kwh_from_joules(joules),
        mean_watts: if seconds > 0.0 { joules / seconds } else { 0.0 },
        measured: true,
        how: format!(
            "measured: RAPL {} (energy_uj, {wraps} wrap{} corrected; {scope})",
            labels.join(" + "),
            if wraps == 1 { "" } else { "s" }
        ),
    }
}

fn gpu_name(gpu: &Gpu) -> Option<String> {
    match gpu {
        Gpu::Energy { nvml, .. } | Gpu::Power { nvml, .. } => Some(nvml.name.clone()),
        Gpu::Estimate { name, .. } => name.clone(),
    }
}

fn gpu_component(gpu: &Gpu, seconds: f64) -> Component {
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
fn open_gpu(library: &str, index: u32, name_hint: Option<&str>) -> Gpu {
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
// RAPL probing
// ---------------------------------------------------------------------------

/// "RAPL present at ZONE but energy_uj is not readable: WHY".
fn unreadable_reason(zone: &Path, err: &io::Error) -> String {
    let why = if err.kind() == io::ErrorKind::PermissionDenied {
        "permission denied; run as root or `chmod o+r` to measure".to_string()
    } else {
        err.to_string()
    };
    format!(
        "RAPL present at {} but energy_uj is not readable: {why}",
        zone.display()
    )
}

/// The numbers in "intel-rapl:1:0", for sorting zones naturally.
fn zone_numbers(dir_name: &str) -> Option<Vec<u32>> {
    dir_name
        .strip_prefix("intel-rapl:")?
        .split(':')
        .map(|n| n.parse().ok())
        .collect()
}

/// Finds the package zones (CPU) and dram zones (RAM) under `root`.
/// `intel-rapl-mmio:*` (the same package counted again), `psys` (the whole
/// platform) and the core/uncore sub-zones (parts of the package) are
/// skipped so that nothing is counted twice.
fn probe_rapl(root: &Path) -> (Source, Source) {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) => {
            let why = if e.kind() == io::ErrorKind::NotFound {
                format!("no RAPL: {} does not exist", root.display())
            } else {
                format!("no RAPL: cannot list {}: {e}", root.display())
            };
            return (Source::Estimate(why.clone()), Source::Estimate(why));
        }
    };
    let mut zones: Vec<(Vec<u32>, PathBuf, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            let numbers = zone_numbers(&dir_name)?;
            Some((numbers, entry.path(), dir_name))
        })
        .collect();
    zones.sort();
    let mut packages = Vec::new();
    let mut drams = Vec::new();
    for (numbers, path, dir_name) in zones {
        let name = fs::read_to_string(path.join("name")).unwrap_or_default();
        let name = name.trim();
        if name == "dram" {
            drams.push((path, format!("dram ({dir_name})")));
        } else if numbers.len() == 1 && name.starts_with("package") {
            packages.push((path, name.to_string()));
        }
    }
    let cpu = open_zones(packages, || {
        format!("no RAPL package zone under {}", root.display())
    });
    let ram = open_zones(drams, || {
        format!("no RAPL dram zone under {}", root.display())
    });
    (cpu, ram)
}

fn open_zones(found: Vec<(PathBuf, String)>, none: impl FnOnce() -> String) -> Source {
    if found.is_empty() {
        return Source::Estimate(none());
    }
    let mut zones = Vec::new();
    for (dir, label) in found {
        let energy_uj = dir.join("energy_uj");
        match read_u64(&energy_uj) {
            Ok(start) => zones.push(RaplZone {
                label,
                max_range: read_u64(&dir.join("max_energy_range_uj")).unwrap_or(0),
                energy_uj,
                last: start,
                total_uj: 0,
                wraps: 0,
            }),
            Err(e) => return Source::Estimate(unreadable_reason(&dir, &e)),
        }
    }
    Source::Rapl(zones)
}

fn read_u64(path: &Path) -> io::Result<u64> {
    fs::read_to_string(path)?.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

// ---------------------------------------------------------------------------
// /proc readers
// ---------------------------------------------------------------------------

fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn logical_cpus(cpuinfo: &str) -> usize {
    let listed = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    if listed > 0 {
        listed
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted from the last ')'.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn read_process_ticks() -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// Clock ticks per second for /proc/self/stat: `sysconf(_SC_CLK_TCK)` on
/// Linux, else 100 (USER_HZ is 100 on every mainstream Linux architecture).
fn clock_ticks_per_second() -> f64 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf takes an int and has no other preconditions.
        let ticks = unsafe { sys::sysconf(sys::SC_CLK_TCK) };
        if ticks > 0 {
            return ticks as f64;
        }
    }
    100.0
}

/// A "Key:   123 kB" line of a /proc status file, in GiB.
fn kib_line_as_gib(text: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib / (1024.0 * 1024.0))
}

fn read_rss_gib() -> Option<f64> {
    kib_line_as_gib(&fs::read_to_string("/proc/self/status").ok()?, "VmRSS:")
}

fn read_mem_total_gib() -> Option<f64> {
    kib_line_as_gib(&fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The `Model:` line of /proc/driver/nvidia/gpus/<PCI address>/information
/// for the `index`-th GPU in PCI order (NVML's default order too).
fn proc_gpu_model(root: &Path, index: u32) -> Option<String> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let info = fs::read_to_string(dirs.get(index as usize)?.join("information")).ok()?;
    let line = info
        .lines()
        .find(|l| l.trim_start().starts_with("Model:"))?;
    let model = line.split_once(':')?.1.trim();
    (!model.is_empty()).then(|| model.to_string())
}

// ---------------------------------------------------------------------------
// Clock ticks and NVML
// ---------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_int, c_long};

    pub const SC_CLK_TCK: c_int = 2;

    unsafe extern "C" {
        pub fn sysconf(name: c_int) -> c_long;
    }
}

/// One GPU opened through NVML (`nvml-wrapper`, which loads the library at
/// run time and shuts NVML down when dropped). NVML is thread-safe, and the
/// meter only calls it under its mutex.
struct NvmlGpu {
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
    fn total_energy_mj(&self) -> Option<u64> {
        if !self.has_energy {
            return None;
        }
        self.device()?.total_energy_consumption().ok()
    }

    /// Current board power, mW.
    fn power_mw(&self) -> Option<u32> {
        self.device()?.power_usage().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "headstart-energy-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Writes through a rename, so a concurrent reader never sees half a file.
    fn write_atomic(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    fn zone(root: &Path, dir: &str, name: &str, energy_uj: u64, max_uj: u64) -> PathBuf {
        let zone = root.join(dir);
        fs::create_dir_all(&zone).unwrap();
        fs::write(zone.join("name"), format!("{name}\n")).unwrap();
        fs::write(zone.join("energy_uj"), format!("{energy_uj}\n")).unwrap();
        fs::write(zone.join("max_energy_range_uj"), format!("{max_uj}\n")).unwrap();
        zone
    }

    fn fake_opts(root: &Path) -> MeterOptions {
        MeterOptions {
            powercap_root: root.to_path_buf(),
            interval: Duration::from_millis(5),
            ..Default::default()
        }
    }

    #[test]
    fn counter_delta_without_and_with_wrap() {
        assert_eq!(counter_delta(100, 250, 1000), 150);
        assert_eq!(counter_delta(7, 7, 1000), 0);
        // 900 -> wrap at 1000 -> 100: 100 before the wrap + 100 after.
        assert_eq!(counter_delta(900, 100, 1000), 200);
        // A 32-bit RAPL range: 4_294_967_295 uJ.
        assert_eq!(
            counter_delta(4_294_000_000, 1_000_000, 4_294_967_295),
            1_967_295
        );
        // Unknown range: only what came after the wrap.
        assert_eq!(counter_delta(900, 100, 0), 100);
    }

    #[test]
    fn kwh_is_joules_over_3_6e6() {
        assert_eq!(kwh_from_joules(3.6e6), 1.0);
        assert!(close(kwh_from_joules(7200.0), 0.002));
        assert!(close(kwh_from_joules(11.0), 11.0 / 3.6e6));
    }

    #[test]
    fn fake_rapl_tree_with_a_wrap_is_measured() {
        let root = temp_dir("wrap");
        let pkg = zone(&root, "intel-rapl:0", "package-0", 1_000_000, 10_000_000);
        let dram = zone(&root, "intel-rapl:0:0", "dram", 500_000, 10_000_000);
        // Parts of the package and duplicates that must not be counted.
        zone(&root, "intel-rapl:0:1", "core", 42, 10_000_000);
        zone(&root, "intel-rapl-mmio:0", "package-0", 77, 10_000_000);
        let mut opts = fake_opts(&root);
        opts.pue = 1.5;
        let mut s = Sampler::new(&opts);

        // +8 J on the package, +1 J on dram.
        fs::write(pkg.join("energy_uj"), "9000000").unwrap();
        fs::write(dram.join("energy_uj"), "1500000").unwrap();
        s.sample();
        // Package wraps: 10_000_000 - 9_000_000 + 2_000_000 = 3 J; dram +1 J.
        fs::write(pkg.join("energy_uj"), "2000000").unwrap();
        fs::write(dram.join("energy_uj"), "2500000").unwrap();
        s.sample();
        let r = s.reading();

        assert!(r.cpu.measured && r.ram.measured && r.measured());
        assert!(close(r.cpu.kwh, 11.0 / 3.6e6), "{}", r.cpu.kwh);
        assert!(close(r.ram.kwh, 2.0 / 3.6e6), "{}", r.ram.kwh);
        assert_eq!(
            r.cpu.how,
            "measured: RAPL package-0 (energy_uj, 1 wrap corrected; whole package, all processes)"
        );
        assert!(
            r.ram
                .how
                .starts_with("measured: RAPL dram (intel-rapl:0:0)")
        );
        // PUE 1.5 applies to the sum: (11 J + 2 J) x 1.5 = 19.5 J.
        assert!(close(r.total_kwh, 19.5 / 3.6e6), "{}", r.total_kwh);
        assert!(r.gpu.is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn two_packages_are_summed() {
        let root = temp_dir("two");
        let p0 = zone(&root, "intel-rapl:0", "package-0", 0, 1_000_000_000);
        let p1 = zone(&root, "intel-rapl:1", "package-1", 5, 1_000_000_000);
        let mut s = Sampler::new(&fake_opts(&root));
        fs::write(p0.join("energy_uj"), "3600000").unwrap(); // 3.6 J
        fs::write(p1.join("energy_uj"), "7200005").unwrap(); // 7.2 J
        s.sample();
        let r = s.reading();
        assert!(close(r.cpu.kwh, 10.8 / 3.6e6));
        assert!(
            r.cpu
                .how
                .starts_with("measured: RAPL package-0 + package-1")
        );
        // No dram zone: RAM is estimated and says why.
        assert!(!r.ram.measured);
        assert!(r.ram.how.contains("no RAPL dram zone"), "{}", r.ram.how);
        // The estimate's parts come with it; the measured CPU has none.
        let ram = r.ram_estimate.as_ref().expect("RAM estimated");
        assert!(close(r.ram.mean_watts, ram.watts));
        assert!(r.cpu_estimate.is_none());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn threaded_meter_reads_a_fake_tree() {
        let root = temp_dir("thread");
        let pkg = zone(
            &root,
            "intel-rapl:0",
            "package-0",
            1_000_000,
            u64::from(u32::MAX),
        );
        let meter = EnergyMeter::start(fake_opts(&root));
        write_atomic(&pkg.join("energy_uj"), "2000000");
        std::thread::sleep(Duration::from_millis(30));
        let mid = meter.snapshot();
        assert!(close(mid.cpu.kwh, 1.0 / 3.6e6));
        write_atomic(&pkg.join("energy_uj"), "4600000");
        std::thread::sleep(Duration::from_millis(30));
        let r = meter.stop();
        // 1 J + 2.6 J.
        assert!(close(r.cpu.kwh, 3.6 / 3.6e6), "{}", r.cpu.kwh);
        assert!(r.cpu.measured);
        assert!(r.seconds >= 0.06);
        assert!(close(r.cpu.mean_watts, 3.6 / r.seconds));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn unreadable_energy_uj_falls_back_to_an_estimate_that_says_why() {
        let root = temp_dir("unreadable");
        let pkg = root.join("intel-rapl:0");
        fs::create_dir_all(pkg.join("energy_uj")).unwrap(); // a directory: unreadable even as root
        fs::write(pkg.join("name"), "package-0\n").unwrap();
        fs::write(pkg.join("max_energy_range_uj"), "262143328850\n").unwrap();
        let r = EnergyMeter::start(fake_opts(&root)).stop();
        assert!(!r.cpu.measured && !r.measured());
        let expected = format!(
            "estimated (RAPL present at {} but energy_uj is not readable: ",
            pkg.display()
        );
        assert!(r.cpu.how.starts_with(&expected), "{}", r.cpu.how);
        assert!(r.cpu.how.contains("CPU share"), "{}", r.cpu.how);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn permission_denied_message_says_how_to_fix_it() {
        let err = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            unreadable_reason(Path::new("/sys/class/powercap/intel-rapl:0"), &err),
            "RAPL present at /sys/class/powercap/intel-rapl:0 but energy_uj is not readable: \
             permission denied; run as root or `chmod o+r` to measure"
        );
    }

    #[test]
    fn missing_powercap_is_estimated() {
        let root = std::env::temp_dir().join(format!(
            "headstart-energy-no-such-dir-{}",
            std::process::id()
        ));
        let (cpu, ram) = probe_rapl(&root);
        for source in [cpu, ram] {
            match source {
                Source::Estimate(why) => assert!(why.contains("does not exist"), "{why}"),
                Source::Rapl(_) => panic!("nothing to measure"),
            }
        }
    }

    #[test]
    fn tdp_estimate_for_known_and_unknown_cpus() {
        // Bare metal: 225 W x 23.5% = 52.875 W.
        let (w, how) = estimate_cpu_watts("AMD EPYC 7B13 64-Core Processor", 128, 0.235);
        assert!(close(w, 52.875), "{w}");
        assert!(how.starts_with("TDP 225 W (AMD EPYC 7B13, shipped table) x 23.5% CPU share"));
        // A 2-vCPU slice: 225 x 2/128 = 3.515625 W at full load, x 0.235.
        let (w, how) = estimate_cpu_watts("AMD EPYC 7B13 64-Core Processor", 2, 0.235);
        assert!(close(w, 0.826171875), "{w}");
        assert!(
            how.contains("prorated to the 2 of its 128 threads"),
            "{how}"
        );
        // Unknown: 4 W x 8 x 50% = 16 W.
        let (w, how) = estimate_cpu_watts("Mystery CPU 9000", 8, 0.5);
        assert!(close(w, 16.0), "{w}");
        assert!(how.contains("not in the shipped TDP table"), "{how}");
        // The share is clamped to [0, 1].
        assert!(close(estimate_cpu_watts("x", 2, 7.0).0, 8.0));
        assert_eq!(estimate_cpu_watts("x", 2, f64::NAN).0, 0.0);
    }

    #[test]
    fn cpu_table_matches_real_model_strings() {
        assert_eq!(
            cpu_tdp("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"),
            Some((300.0, "Intel Xeon Platinum 8375C"))
        );
        assert_eq!(
            cpu_tdp("13th Gen Intel(R) Core(TM) i9-13900K"),
            Some((125.0, "Intel Core i9-13900K"))
        );
        assert_eq!(cpu_tdp("Apple M2"), Some((20.0, "Apple M2")));
        assert_eq!(
            cpu_tdp("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz").map(|t| t.0),
            Some(145.0)
        );
        assert_eq!(
            cpu_tdp("Intel(R) Xeon(R) Gold 6230R CPU").map(|t| t.0),
            Some(150.0)
        );
        assert_eq!(
            cpu_spec("AMD EPYC 9654 96-Core Processor").map(|s| s.threads),
            Some(192)
        );
        // This machine's generic name and other unknowns.
        assert_eq!(cpu_tdp("AMD EPYC"), None);
        assert_eq!(cpu_tdp("unknown CPU"), None);
    }

    #[test]
    fn unknown_cpu_watts_per_thread_is_near_the_table_median() {
        let mut per_thread: Vec<f64> = CPU_TABLE
            .iter()
            .map(|row| row.tdp_w / f64::from(row.threads))
            .collect();
        per_thread.sort_by(f64::total_cmp);
        let median = per_thread[per_thread.len() / 2];
        assert!(
            (median - UNKNOWN_CPU_WATTS_PER_THREAD).abs() < 1.0,
            "{median}"
        );
    }

    #[test]
    fn shipped_tdp_tables_keep_the_values_of_the_old_literals() {
        let cpu = parse_cpu_table(data::CPU_TDP_CSV).unwrap();
        let gpu = parse_gpu_table(data::GPU_TDP_CSV).unwrap();
        assert_eq!((cpu.len(), gpu.len()), (43, 36));
        assert_eq!(CPU_TABLE.len(), 43);
        let c = |key: &str| cpu.iter().find(|r| r.key == key).cloned().unwrap();
        let row = |key: &str, name: &str, tdp_w: f64, threads: u32| CpuRow {
            key: key.into(),
            name: name.into(),
            tdp_w,
            threads,
        };
        assert_eq!(
            c("epyc 7b13"),
            row("epyc 7b13", "AMD EPYC 7B13", 225.0, 128)
        );
        assert_eq!(
            c("epyc 9754"),
            row("epyc 9754", "AMD EPYC 9754", 360.0, 256)
        );
        assert_eq!(
            c("threadripper 3990x"),
            row(
                "threadripper 3990x",
                "AMD Ryzen Threadripper 3990X",
                280.0,
                128
            )
        );
        assert_eq!(
            c("xeon platinum 8480"),
            row(
                "xeon platinum 8480",
                "Intel Xeon Platinum 8480+",
                350.0,
                112
            )
        );
        assert_eq!(c("e5-2686 v4").tdp_w, 145.0);
        assert_eq!(c("i7-12700h").tdp_w, 45.0);
        assert_eq!(c("apple m3"), row("apple m3", "Apple M3", 22.0, 8));
        let g = |key: &str| gpu.iter().find(|r| r.key == key).cloned().unwrap();
        assert_eq!(
            g("h200 nvl"),
            GpuRow {
                key: "h200 nvl".into(),
                name: "NVIDIA H200 NVL".into(),
                tdp_w: 600.0
            }
        );
        assert_eq!(g("b200").tdp_w, 1000.0);
        assert_eq!(g("a100 80gb pcie").tdp_w, 300.0);
        assert_eq!(g("k80").tdp_w, 300.0);
        assert_eq!(g("rtx 5090").name, "NVIDIA GeForce RTX 5090");
        assert_eq!(g("mi300x").tdp_w, 750.0);
        // The file names its source in its header comment.
        assert!(data::CPU_TDP_CSV.starts_with("# CPU thermal design power"));
        assert!(data::CPU_TDP_CSV.contains("# Source: the vendors' published"));
        assert!(data::GPU_TDP_CSV.contains("# Source: the vendors' data sheets"));
    }

    #[test]
    fn malformed_tdp_rows_are_errors() {
        let head = "# comment\nkey,name,tdp_w,threads\n";
        let bad = |rows: &str| parse_cpu_table(&format!("{head}{rows}")).unwrap_err();
        assert!(
            bad("epyc 1,AMD EPYC 1,200,64\nepyc 2,AMD EPYC 2,lots,64\n")
                .starts_with("src/cost/data/cpu_tdp.csv line 4: ")
        );
        assert_eq!(
            bad("epyc 1,AMD EPYC 1,0,64\n"),
            "src/cost/data/cpu_tdp.csv line 3: tdp_w 0 is not a positive number"
        );
        assert_eq!(
            bad("epyc 1,AMD EPYC 1,200,0\n"),
            "src/cost/data/cpu_tdp.csv line 3: threads 0 is not a positive number"
        );
        assert!(bad("EPYC 1,AMD EPYC 1,200,64\n").contains("key \"EPYC 1\" is not normalised"));
        assert!(bad("epyc 1,AMD EPYC 1,200\n").starts_with("src/cost/data/cpu_tdp.csv: "));
        assert_eq!(
            bad("epyc 1,A,200,64\nepyc 1,B,100,32\n"),
            "src/cost/data/cpu_tdp.csv: \"epyc 1\" appears twice"
        );
        assert_eq!(bad(""), "src/cost/data/cpu_tdp.csv: no rows");
        let gpu = parse_gpu_table("key,name,tdp_w\nl4,NVIDIA L4,-72\n").unwrap_err();
        assert_eq!(
            gpu,
            "src/cost/data/gpu_tdp.csv line 2: tdp_w -72 is not a positive number"
        );
    }

    #[test]
    fn ram_power_is_the_process_share_of_the_machine() {
        // 0.5 GiB resident on a 24 GiB machine: the machine's 4 DIMMs draw
        // 20 W, of which the process holds 0.5 / 24.
        let e = ram_estimate(0.5, 24.0, false);
        assert_eq!((e.machine_dimms, e.machine_w, e.floor_w), (4, 20.0, 10.0));
        assert!(close(e.share, 0.5 / 24.0));
        assert!(close(e.watts, 20.0 * 0.5 / 24.0), "{}", e.watts); // 0.4167 W
        assert!(e.watts < 1.0);
        // CodeCarbon's process mode (the model on the process's memory, with
        // its floor) would charge 10 W for the same process.
        assert_eq!(ram_watts(0.5, false), 10.0);
        // Twice the memory, twice the power.
        assert!(close(ram_estimate(1.0, 24.0, false).watts, 2.0 * e.watts));
        // The floor holds for a small machine, not for the process on it:
        // 1 GiB of an 8 GiB machine = 10 W x 1/8.
        assert!(close(ram_estimate(1.0, 8.0, false).watts, 1.25));
        // ARM: 2 DIMMs x 1.5 W = 3 W for 8 GiB, x 1/4.
        assert!(close(ram_estimate(2.0, 8.0, true).watts, 0.75));
        // A process cannot hold more than the machine.
        assert_eq!(ram_estimate(30.0, 24.0, false).watts, 20.0);
        // Machine memory unknown: CodeCarbon's process-mode figure.
        let unknown = ram_estimate(0.5, 0.0, false);
        assert_eq!((unknown.share, unknown.watts), (1.0, 10.0));
        assert!(unknown.how().starts_with("machine memory unknown"));
        assert_eq!(
            e.how(),
            "CodeCarbon 3.x DIMM model for the machine's 24.00 GiB: 4 DIMM(s) x 5 W, at least \
             10 W = 20.0 W, x 2.08% of it held by this process (mean resident 0.500 GiB) = \
             0.417 W"
        );
    }

    #[test]
    fn estimated_energy_scales_with_cpu_share_not_only_with_time() {
        // The 2-vCPU VM of BENCHMARKS.md: "AMD EPYC" (not in the table: 4 W
        // per logical CPU), 24 GiB, a process with 0.5 GiB resident, 100 s.
        let run = |seconds: f64, cpu_seconds: f64| {
            let (cpu, _) = estimated_cpu("AMD EPYC", 2, seconds, Some(cpu_seconds), "");
            let (ram, _) = estimated_ram(0.5, 24.0, false, seconds, "");
            (cpu.kwh + ram.kwh) * JOULES_PER_KWH
        };
        let ram_w = 20.0 * 0.5 / 24.0;
        // 10% of the CPUs (20 CPU-s): (8 W x 0.1 + 0.417 W) x 100 s.
        let light = run(100.0, 20.0);
        assert!(close(light, (0.8 + ram_w) * 100.0), "{light}"); // 121.7 J
        // 90% (180 CPU-s): (8 W x 0.9 + 0.417 W) x 100 s.
        let busy = run(100.0, 180.0);
        assert!(close(busy, (7.2 + ram_w) * 100.0), "{busy}"); // 761.7 J
        // Same time, 9x the CPU time: over 6x the energy (it was 1.6x with
        // the 10 W RAM floor).
        assert!(busy / light > 6.0, "{}", busy / light);
        // The same CPU time spread over twice the time costs only the RAM
        // for the extra time.
        assert!(close(run(200.0, 180.0), busy + ram_w * 100.0));
        let (_, e) = estimated_cpu("AMD EPYC", 2, 100.0, Some(180.0), "");
        assert!(close(e.cpu_share, 0.9));
        assert_eq!((e.tdp_w, e.full_load_w, e.table_model), (8.0, 8.0, None));
        // No CPU time readable: all CPUs assumed busy, and the text says so.
        let (c, e) = estimated_cpu("AMD EPYC", 2, 100.0, None, "no RAPL");
        assert_eq!(e.cpu_share, 1.0);
        assert!(
            c.how
                .starts_with("estimated (no RAPL): 4 W per logical CPU x 2")
        );
        assert!(c.how.contains("an upper bound"), "{}", c.how);
    }

    #[test]
    fn cpu_estimate_parts() {
        let e = cpu_estimate("AMD EPYC 7B13 64-Core Processor", 2, 0.5);
        assert_eq!(e.table_model.as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(
            e.tdp_source,
            "src/cost/data/cpu_tdp.csv (vendors' published TDP): AMD EPYC 7B13"
        );
        assert_eq!((e.tdp_w, e.chip_threads, e.logical_cpus), (225.0, 128, 2));
        assert!(close(e.full_load_w, 3.515625));
        assert!(close(e.watts, 1.7578125));
    }

    #[test]
    fn gpu_table_picks_the_most_specific_model() {
        assert_eq!(gpu_tdp("NVIDIA H200"), Some(700.0));
        assert_eq!(gpu_tdp("NVIDIA H100 80GB HBM3"), Some(700.0));
        assert_eq!(gpu_tdp("NVIDIA H100 PCIe"), Some(350.0));
        assert_eq!(gpu_tdp("NVIDIA A100-SXM4-80GB"), Some(400.0));
        assert_eq!(gpu_tdp("NVIDIA A100-PCIE-40GB"), Some(250.0));
        assert_eq!(gpu_tdp("NVIDIA A100 80GB PCIe"), Some(300.0));
        assert_eq!(gpu_tdp("NVIDIA A10G"), Some(150.0));
        assert_eq!(gpu_tdp("NVIDIA L4"), Some(72.0));
        assert_eq!(gpu_tdp("NVIDIA L40S"), Some(350.0));
        assert_eq!(gpu_tdp("Tesla T4"), Some(70.0));
        assert_eq!(gpu_tdp("Tesla V100-SXM2-16GB"), Some(300.0));
        assert_eq!(gpu_tdp("Tesla V100-PCIE-32GB"), Some(250.0));
        assert_eq!(gpu_tdp("NVIDIA GeForce RTX 4090"), Some(450.0));
        assert_eq!(gpu_tdp("NVIDIA GeForce RTX 3090 Ti"), Some(450.0));
        assert_eq!(gpu_tdp("NVIDIA RTX A4000"), Some(140.0));
        assert_eq!(gpu_tdp("Matrox G200"), None);
    }

    #[test]
    fn ram_model_follows_codecarbon() {
        assert_eq!(ram_dimms(1.0), 1);
        assert_eq!(ram_dimms(8.0), 2);
        assert_eq!(ram_dimms(24.0), 4);
        assert_eq!(ram_dimms(100.0), 8);
        assert_eq!(ram_dimms(512.0), 8); // 8 x 64 GiB
        assert_eq!(ram_dimms(1000.0), 16); // ceil(1000 / 64)
        assert_eq!(ram_dimms(8192.0), 32); // capped
        assert_eq!(ram_watts(1.0, false), 10.0); // 1 x 5 W, floor 10 W
        assert_eq!(ram_watts(8.0, false), 10.0); // 2 x 5 W
        assert_eq!(ram_watts(24.0, false), 20.0); // 4 x 5 W
        assert!(close(ram_watts(100.0, false), 38.0)); // 20 + 4 x 4.5
        assert!(close(ram_watts(1000.0, false), 70.0)); // 20 + 18 + 8 x 4
        assert!(close(ram_watts(8.0, true), 3.0)); // 2 x 1.5 W, floor 3 W
    }

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let stat = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0 100";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn cpuinfo_model_and_count() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n";
        assert_eq!(cpu_model(info), "AMD EPYC 7B13 64-Core Processor");
        assert_eq!(logical_cpus(info), 2);
        assert_eq!(cpu_model(""), "unknown CPU");
    }

    #[test]
    fn gpu_model_from_proc_driver_nvidia() {
        let root = temp_dir("procgpu");
        for (pci, model) in [
            ("0000:0a:00.0", "NVIDIA L4"),
            ("0000:01:00.0", "NVIDIA H200"),
        ] {
            fs::create_dir_all(root.join(pci)).unwrap();
            fs::write(
                root.join(pci).join("information"),
                format!("Model: \t\t {model}\nIRQ:   42\n"),
            )
            .unwrap();
        }
        assert_eq!(proc_gpu_model(&root, 0).as_deref(), Some("NVIDIA H200"));
        assert_eq!(proc_gpu_model(&root, 1).as_deref(), Some("NVIDIA L4"));
        assert_eq!(proc_gpu_model(&root, 2), None);
        fs::remove_dir_all(&root).unwrap();
    }

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

    #[test]
    fn requesting_a_gpu_never_panics() {
        let root = temp_dir("gpu");
        let opts = MeterOptions {
            gpu: Some(0),
            gpu_name: Some("Tesla T4".into()),
            ..fake_opts(&root)
        };
        let r = EnergyMeter::start(opts).stop();
        let gpu = r.gpu.expect("a GPU component when one is requested");
        assert!(!gpu.how.is_empty());
        if !gpu.measured {
            // No NVML here: the T4 hint gives a 70 W estimate.
            assert!(gpu.how.contains("TDP 70 W"), "{}", gpu.how);
            assert!(close(gpu.mean_watts, 70.0));
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_machine_gives_a_reading() {
        let r = measure(MeterOptions::default(), || {
            let t = Instant::now();
            let mut x = 0u64;
            while t.elapsed() < Duration::from_millis(200) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x)
        })
        .1;
        eprintln!(
            "{}\n  cpu: {}\n  ram: {}",
            r.summary(),
            r.cpu.how,
            r.ram.how
        );
        eprintln!(
            "  cpu_model={:?} cpu_count={} ram_total_gb={:.2}",
            r.cpu_model, r.cpu_count, r.ram_total_gb
        );
        assert!(r.seconds >= 0.2);
        assert!(r.cpu.kwh > 0.0 && r.ram.kwh > 0.0);
        assert!(close(r.total_kwh, r.cpu.kwh + r.ram.kwh));
        assert!(r.cpu_count >= 1);
        assert!(r.summary().starts_with("energy "));
    }

    #[test]
    fn summary_is_one_line() {
        let c = |kwh: f64, measured: bool| Component {
            kwh,
            mean_watts: kwh * 3.6e6 / 302.0,
            measured,
            how: String::new(),
        };
        let r = EnergyReading {
            seconds: 302.0,
            cpu: c(0.0091, false),
            gpu: Some(c(0.05, true)),
            ram: c(0.00084, false),
            pue: 1.1,
            total_kwh: (0.0091 + 0.05 + 0.00084) * 1.1,
            cpu_model: "x".into(),
            gpu_model: None,
            cpu_count: 2,
            ram_total_gb: 8.0,
            cpu_share: None,
            cpu_estimate: None,
            ram_estimate: None,
        };
        assert_eq!(
            r.summary(),
            "energy 65.93 Wh in 5m02s = (CPU 9.10 Wh estimated, 108.5 W + GPU 50.00 Wh \
             measured, 596.0 W + RAM 0.84 Wh estimated, 10.0 W) x PUE 1.10"
        );
        assert!(!r.measured());
    }
}
