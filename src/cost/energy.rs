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
//!   [`estimate_cpu_watts`]) and the reading says why.
//! * **RAM** — measured from a RAPL `dram` zone when one is exposed and
//!   readable; otherwise estimated with CodeCarbon's RAM model (see
//!   [`ram_watts`]).
//! * **GPU** — only when a GPU index is requested: NVML is loaded at run time
//!   with `dlopen("libnvidia-ml.so.1")`; the board's energy counter
//!   (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer) is used when
//!   supported, else `nvmlDeviceGetPowerUsage` is sampled and integrated.
//!   Without NVML the GPU is estimated from its TDP (see [`gpu_tdp`]).
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
//!
//! Standard library only: NVML and `sysconf` are reached through `extern "C"`
//! declarations of libc functions that std already links on Linux.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, c_void};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
// Shipped TDP tables
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

/// CPU TDPs: (lower-case key matched inside the normalised `model name`,
/// shown name, TDP W, hardware threads per chip). Figures are the vendors'
/// published default TDP / processor base power. Cloud-only parts (EPYC
/// 7B12/7B13/7R13, Xeon 8xxxC/CL/M) have no public datasheet: they take the
/// TDP of the retail part they derive from, as CodeCarbon's table does.
/// Apple publishes no TDP: the M-series rows are approximate package power
/// under full CPU load.
const CPU_TABLE: &[(&str, &str, f64, u32)] = &[
    // AMD EPYC
    ("epyc 7b12", "AMD EPYC 7B12", 240.0, 128),
    ("epyc 7b13", "AMD EPYC 7B13", 225.0, 128),
    ("epyc 7r13", "AMD EPYC 7R13", 225.0, 96),
    ("epyc 7443", "AMD EPYC 7443", 200.0, 48),
    ("epyc 7452", "AMD EPYC 7452", 155.0, 64),
    ("epyc 7543", "AMD EPYC 7543", 225.0, 64),
    ("epyc 7713", "AMD EPYC 7713", 225.0, 128),
    ("epyc 7742", "AMD EPYC 7742", 225.0, 128),
    ("epyc 7763", "AMD EPYC 7763", 280.0, 128),
    ("epyc 9554", "AMD EPYC 9554", 360.0, 128),
    ("epyc 9654", "AMD EPYC 9654", 360.0, 192),
    ("epyc 9754", "AMD EPYC 9754", 360.0, 256),
    // AMD desktop / workstation
    ("ryzen 7 5800x", "AMD Ryzen 7 5800X", 105.0, 16),
    ("ryzen 9 5950x", "AMD Ryzen 9 5950X", 105.0, 32),
    ("ryzen 9 7950x", "AMD Ryzen 9 7950X", 170.0, 32),
    (
        "threadripper 3990x",
        "AMD Ryzen Threadripper 3990X",
        280.0,
        128,
    ),
    // Intel Xeon (servers and cloud)
    ("e5-2686 v4", "Intel Xeon E5-2686 v4", 145.0, 36),
    ("e5-2690 v4", "Intel Xeon E5-2690 v4", 135.0, 28),
    ("xeon gold 6230", "Intel Xeon Gold 6230", 125.0, 40),
    ("xeon gold 6230r", "Intel Xeon Gold 6230R", 150.0, 52),
    ("xeon gold 6248", "Intel Xeon Gold 6248", 150.0, 40),
    ("xeon gold 6338", "Intel Xeon Gold 6338", 205.0, 64),
    (
        "xeon platinum 8124m",
        "Intel Xeon Platinum 8124M",
        240.0,
        36,
    ),
    ("xeon platinum 8168", "Intel Xeon Platinum 8168", 205.0, 48),
    (
        "xeon platinum 8175m",
        "Intel Xeon Platinum 8175M",
        240.0,
        48,
    ),
    (
        "xeon platinum 8259cl",
        "Intel Xeon Platinum 8259CL",
        210.0,
        48,
    ),
    (
        "xeon platinum 8272cl",
        "Intel Xeon Platinum 8272CL",
        195.0,
        52,
    ),
    (
        "xeon platinum 8275cl",
        "Intel Xeon Platinum 8275CL",
        240.0,
        48,
    ),
    ("xeon platinum 8358", "Intel Xeon Platinum 8358", 250.0, 64),
    (
        "xeon platinum 8375c",
        "Intel Xeon Platinum 8375C",
        300.0,
        64,
    ),
    ("xeon platinum 8380", "Intel Xeon Platinum 8380", 270.0, 80),
    ("xeon platinum 8468", "Intel Xeon Platinum 8468", 350.0, 96),
    (
        "xeon platinum 8480",
        "Intel Xeon Platinum 8480+",
        350.0,
        112,
    ),
    // Intel Core
    ("i5-13600k", "Intel Core i5-13600K", 125.0, 20),
    ("i7-12700h", "Intel Core i7-12700H", 45.0, 20),
    ("i7-12700k", "Intel Core i7-12700K", 125.0, 20),
    ("i7-13700k", "Intel Core i7-13700K", 125.0, 24),
    ("i9-12900k", "Intel Core i9-12900K", 125.0, 24),
    ("i9-13900k", "Intel Core i9-13900K", 125.0, 32),
    ("i9-14900k", "Intel Core i9-14900K", 125.0, 32),
    // Apple silicon (approximate, see above)
    ("apple m1", "Apple M1", 20.0, 8),
    ("apple m2", "Apple M2", 20.0, 8),
    ("apple m3", "Apple M3", 22.0, 8),
];

/// GPU board powers: (lower-case key matched inside the normalised device
/// name, shown name, TDP / total board power W), from the vendors' data
/// sheets. Where a model ships in several forms, the bare name is the SXM /
/// flagship form and the PCIe / NVL forms have their own rows.
const GPU_TABLE: &[(&str, &str, f64)] = &[
    ("b200", "NVIDIA B200", 1000.0),
    ("h200", "NVIDIA H200 SXM", 700.0),
    ("h200 nvl", "NVIDIA H200 NVL", 600.0),
    ("h100", "NVIDIA H100 SXM", 700.0),
    ("h100 pcie", "NVIDIA H100 PCIe", 350.0),
    ("h100 nvl", "NVIDIA H100 NVL", 400.0),
    ("a100", "NVIDIA A100 SXM", 400.0),
    ("a100-pcie", "NVIDIA A100 PCIe 40GB", 250.0),
    ("a100 80gb pcie", "NVIDIA A100 PCIe 80GB", 300.0),
    ("a10", "NVIDIA A10", 150.0),
    ("a10g", "NVIDIA A10G", 150.0),
    ("a30", "NVIDIA A30", 165.0),
    ("a40", "NVIDIA A40", 300.0),
    ("l4", "NVIDIA L4", 72.0),
    ("l40", "NVIDIA L40", 300.0),
    ("l40s", "NVIDIA L40S", 350.0),
    ("t4", "NVIDIA T4", 70.0),
    ("v100", "NVIDIA V100 SXM2", 300.0),
    ("v100-pcie", "NVIDIA V100 PCIe", 250.0),
    ("v100s", "NVIDIA V100S PCIe", 250.0),
    ("p100", "NVIDIA P100 PCIe", 250.0),
    ("k80", "NVIDIA K80", 300.0),
    ("rtx a4000", "NVIDIA RTX A4000", 140.0),
    ("rtx a6000", "NVIDIA RTX A6000", 300.0),
    ("rtx 6000 ada", "NVIDIA RTX 6000 Ada", 300.0),
    ("titan rtx", "NVIDIA TITAN RTX", 280.0),
    ("gtx 1080 ti", "NVIDIA GeForce GTX 1080 Ti", 250.0),
    ("rtx 3060", "NVIDIA GeForce RTX 3060", 170.0),
    ("rtx 3080", "NVIDIA GeForce RTX 3080", 320.0),
    ("rtx 3090", "NVIDIA GeForce RTX 3090", 350.0),
    ("rtx 3090 ti", "NVIDIA GeForce RTX 3090 Ti", 450.0),
    ("rtx 4080", "NVIDIA GeForce RTX 4080", 320.0),
    ("rtx 4090", "NVIDIA GeForce RTX 4090", 450.0),
    ("rtx 5090", "NVIDIA GeForce RTX 5090", 575.0),
    ("mi250x", "AMD Instinct MI250X", 560.0),
    ("mi300x", "AMD Instinct MI300X", 750.0),
];

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
    best_row(model, CPU_TABLE, |row| row.0).map(|&(_, name, tdp_w, threads)| CpuSpec {
        name,
        tdp_w,
        threads,
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
    gpu_row(name).map(|row| row.2)
}

fn gpu_row(name: &str) -> Option<&'static (&'static str, &'static str, f64)> {
    best_row(name, GPU_TABLE, |row| row.0)
}

/// Mean CPU watts estimated for a process that used `cpu_share` of the
/// machine's `logical_cpus` (share = process CPU seconds / (wall seconds x
/// logical CPUs)), and how it was derived.
///
/// Known model: TDP x share. When the machine shows a different number of
/// logical CPUs than one chip has (a VM slice sees fewer, a two-socket host
/// more), the TDP is first prorated by logical CPUs / chip threads, so a
/// 2-vCPU slice of a 128-thread EPYC is charged 2/128 of its TDP at full
/// load, not all of it.
/// Unknown model: [`UNKNOWN_CPU_WATTS_PER_THREAD`] x logical CPUs x share.
pub fn estimate_cpu_watts(model: &str, logical_cpus: usize, cpu_share: f64) -> (f64, String) {
    let n = logical_cpus.max(1);
    let share = if cpu_share.is_finite() {
        cpu_share.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pct = share * 100.0;
    match cpu_spec(model) {
        Some(spec) => {
            let full = spec.tdp_w * n as f64 / f64::from(spec.threads.max(1));
            let watts = full * share;
            let prorated = if n as u64 == u64::from(spec.threads) {
                String::new()
            } else {
                format!(
                    " prorated to the {n} of its {} threads this machine shows = {full:.2} W,",
                    spec.threads
                )
            };
            let how = format!(
                "TDP {} W ({}, shipped table){prorated} x {pct:.1}% CPU share of {n} logical \
                 CPUs = {watts:.2} W",
                spec.tdp_w, spec.name
            );
            (watts, how)
        }
        None => {
            let full = UNKNOWN_CPU_WATTS_PER_THREAD * n as f64;
            let watts = full * share;
            let how = format!(
                "{UNKNOWN_CPU_WATTS_PER_THREAD} W per logical CPU x {n} (CPU {model:?} is not in \
                 the shipped TDP table) x {pct:.1}% CPU share = {watts:.2} W"
            );
            (watts, how)
        }
    }
}

// ---------------------------------------------------------------------------
// RAM model (CodeCarbon 3.x)
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

/// RAM watts by CodeCarbon 3.x's model (`codecarbon/external/ram.py`,
/// release 3.3): 5 W per DIMM on x86 (1.5 W on ARM) for the first 4 DIMMs,
/// 90% of that for DIMMs 5-8, 80% for 9-16 and 70% beyond, never below
/// 10 W on x86 (3 W on ARM). It replaced the older rule of 3 W per 8 GB
/// (0.375 W/GB). CodeCarbon applies it to the machine's memory in "machine"
/// mode and to the process's resident memory in "process" mode; this meter
/// tracks the process, so it uses the resident set.
pub fn ram_watts(gib: f64, arm: bool) -> f64 {
    let (per_dimm, floor) = if arm {
        (RAM_WATTS_PER_DIMM_ARM, 3.0)
    } else {
        (RAM_WATTS_PER_DIMM_X86, 10.0)
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
    watts.max(floor)
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
        nvml: Nvml,
        start_mj: u64,
        last_mj: u64,
    },
    /// NVML power samples (W), integrated with the trapezoid rule.
    Power {
        nvml: Nvml,
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
    rss_gib: f64,
    rss_gib_sum: f64,
    rss_samples: u32,
    ram_estimate_j: f64,
}

impl Sampler {
    fn new(opts: &MeterOptions) -> Sampler {
        let cpuinfo = fs::read_to_string(&opts.cpuinfo).unwrap_or_default();
        let (cpu, ram) = probe_rapl(&opts.powercap_root);
        let gpu = opts
            .gpu
            .map(|index| open_gpu(index, opts.gpu_name.as_deref()));
        let rss_gib = read_rss_gib().unwrap_or(0.0);
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
            rss_gib,
            rss_gib_sum: rss_gib,
            rss_samples: 1,
            ram_estimate_j: 0.0,
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
                self.ram_estimate_j += ram_watts(self.rss_gib, self.arm) * dt;
                if let Some(rss) = read_rss_gib() {
                    self.rss_gib = rss;
                }
                self.rss_gib_sum += self.rss_gib;
                self.rss_samples += 1;
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

    fn reading(&self) -> EnergyReading {
        let seconds = self.last_at.duration_since(self.started).as_secs_f64();
        let cpu = self.cpu_component(seconds);
        let ram = self.ram_component(seconds);
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
        }
    }

    fn cpu_component(&self, seconds: f64) -> Component {
        match &self.cpu {
            Source::Rapl(zones) => rapl_component(zones, seconds, "whole package, all processes"),
            Source::Estimate(why) => {
                let cpu_seconds = match (self.ticks_start, read_process_ticks()) {
                    (Some(start), Some(now)) => {
                        Some(now.saturating_sub(start) as f64 / self.ticks_per_s)
                    }
                    _ => None,
                };
                let wall_cpus = seconds * self.cpu_count.max(1) as f64;
                let (share, note) = match cpu_seconds {
                    Some(_) if wall_cpus <= 0.0 => (0.0, String::new()),
                    Some(cs) => (
                        cs / wall_cpus,
                        format!(" ({cs:.2} CPU-s in {seconds:.2} s)"),
                    ),
                    None => (
                        1.0,
                        " (process CPU time unreadable: all logical CPUs assumed busy, an upper \
                         bound)"
                            .to_string(),
                    ),
                };
                let (watts, detail) = estimate_cpu_watts(&self.cpu_model, self.cpu_count, share);
                Component {
                    kwh: kwh_from_joules(watts * seconds),
                    mean_watts: watts,
                    measured: false,
                    how: format!("{}: {detail}{note}", estimated(why)),
                }
            }
        }
    }

    fn ram_component(&self, seconds: f64) -> Component {
        match &self.ram {
            Source::Rapl(zones) => rapl_component(zones, seconds, "whole machine"),
            Source::Estimate(why) => {
                let mean_gib = self.rss_gib_sum / f64::from(self.rss_samples.max(1));
                let watts = ram_watts(mean_gib, self.arm);
                let joules = if self.ram_estimate_j > 0.0 {
                    self.ram_estimate_j
                } else {
                    watts * seconds
                };
                let mean_watts = if seconds > 0.0 {
                    joules / seconds
                } else {
                    watts
                };
                let (per_dimm, floor) = if self.arm {
                    (RAM_WATTS_PER_DIMM_ARM, 3.0)
                } else {
                    (RAM_WATTS_PER_DIMM_X86, 10.0)
                };
                Component {
                    kwh: kwh_from_joules(joules),
                    mean_watts,
                    measured: false,
                    how: format!(
                        "{}: CodeCarbon 3.x RAM model, {per_dimm} W per DIMM ({}) with the DIMM \
                         count guessed from this process's resident memory (mean {mean_gib:.3} \
                         GiB -> {} DIMM(s)), at least {floor} W = {mean_watts:.1} W",
                        estimated(why),
                        if self.arm { "ARM" } else { "x86" },
                        ram_dimms(mean_gib),
                    ),
                }
            }
        }
    }
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
            Some(&(_, shown, watts)) => Component {
                kwh: kwh_from_joules(watts * seconds),
                mean_watts: watts,
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

fn open_gpu(index: u32, name_hint: Option<&str>) -> Gpu {
    match Nvml::open(NVML_LIBRARY, index) {
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
// NVML through dlopen
// ---------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_char, c_int, c_long, c_void};

    pub const RTLD_NOW: c_int = 2;
    pub const SC_CLK_TCK: c_int = 2;

    unsafe extern "C" {
        pub fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        pub fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        pub fn dlerror() -> *mut c_char;
        pub fn sysconf(name: c_int) -> c_long;
    }
}

type NvmlDevice = *mut c_void;
type NvmlInit = unsafe extern "C" fn() -> c_int;
type NvmlHandleByIndex = unsafe extern "C" fn(c_uint, *mut NvmlDevice) -> c_int;
type NvmlGetName = unsafe extern "C" fn(NvmlDevice, *mut c_char, c_uint) -> c_int;
type NvmlTotalEnergy = unsafe extern "C" fn(NvmlDevice, *mut c_ulonglong) -> c_int;
type NvmlPowerUsage = unsafe extern "C" fn(NvmlDevice, *mut c_uint) -> c_int;
type NvmlShutdown = unsafe extern "C" fn() -> c_int;

/// NVML's return codes that a user may meet here.
fn nvml_error(code: c_int) -> String {
    let what = match code {
        1 => "not initialised",
        2 => "invalid argument (no GPU at that index?)",
        3 => "not supported on this GPU",
        4 => "no permission",
        6 => "not found",
        9 => "NVIDIA driver not loaded",
        12 => "NVML library not found",
        15 => "GPU is lost",
        999 => "unknown error",
        _ => "error",
    };
    format!("NVML error {code}: {what}")
}

/// An opened NVML device. NVML is thread-safe, and the meter only calls it
/// under its mutex.
struct Nvml {
    index: u32,
    name: String,
    device: NvmlDevice,
    energy: Option<NvmlTotalEnergy>,
    energy_error: String,
    power: Option<NvmlPowerUsage>,
    shutdown: Option<NvmlShutdown>,
}

// SAFETY: the device handle is an opaque token that NVML accepts from any
// thread; every call through it is serialised by the meter's mutex.
unsafe impl Send for Nvml {}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvml")
            .field("index", &self.index)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Nvml {
    /// Loads `library`, initialises NVML and opens GPU `index`. Any failure
    /// is an `Err` that says what failed, never a panic.
    #[cfg(target_os = "linux")]
    fn open(library: &str, index: u32) -> Result<Nvml, String> {
        use std::ffi::{CStr, CString};

        let c_library = CString::new(library).map_err(|e| e.to_string())?;
        // SAFETY: a valid C string; dlopen has no other preconditions.
        let handle = unsafe { sys::dlopen(c_library.as_ptr(), sys::RTLD_NOW) };
        if handle.is_null() {
            // SAFETY: dlerror returns null or a C string valid until the next
            // dl* call on this thread, and it is copied at once.
            let err = unsafe {
                let msg = sys::dlerror();
                if msg.is_null() {
                    "unknown dlopen error".to_string()
                } else {
                    CStr::from_ptr(msg).to_string_lossy().into_owned()
                }
            };
            return Err(format!(
                "NVML not loadable: dlopen({library}) failed: {err}"
            ));
        }
        let symbol = |name: &str| -> Option<*mut c_void> {
            let c_name = CString::new(name).ok()?;
            // SAFETY: a handle from dlopen and a valid C string.
            let ptr = unsafe { sys::dlsym(handle, c_name.as_ptr()) };
            (!ptr.is_null()).then_some(ptr)
        };
        let need = |name: &str| symbol(name).ok_or_else(|| format!("NVML lacks {name}"));
        // SAFETY (all transmutes below): each pointer is the address of the
        // NVML function of that name, whose C signature (nvml.h) is the one
        // the target type spells out.
        let init = unsafe { std::mem::transmute::<*mut c_void, NvmlInit>(need("nvmlInit_v2")?) };
        let by_index = unsafe {
            std::mem::transmute::<*mut c_void, NvmlHandleByIndex>(need(
                "nvmlDeviceGetHandleByIndex_v2",
            )?)
        };
        let get_name =
            unsafe { std::mem::transmute::<*mut c_void, NvmlGetName>(need("nvmlDeviceGetName")?) };
        let energy = symbol("nvmlDeviceGetTotalEnergyConsumption")
            .map(|p| unsafe { std::mem::transmute::<*mut c_void, NvmlTotalEnergy>(p) });
        let power = symbol("nvmlDeviceGetPowerUsage")
            .map(|p| unsafe { std::mem::transmute::<*mut c_void, NvmlPowerUsage>(p) });
        let shutdown = symbol("nvmlShutdown")
            .map(|p| unsafe { std::mem::transmute::<*mut c_void, NvmlShutdown>(p) });

        // SAFETY: nvmlInit_v2 takes no arguments.
        let code = unsafe { init() };
        if code != 0 {
            return Err(format!("NVML init failed: {}", nvml_error(code)));
        }
        let mut nvml = Nvml {
            index,
            name: format!("GPU {index}"),
            device: std::ptr::null_mut(),
            energy,
            energy_error: String::new(),
            power,
            shutdown,
        };
        // SAFETY: NVML is initialised and the out-pointer is valid. On error
        // `nvml` is dropped, which calls nvmlShutdown to balance the init.
        let code = unsafe { by_index(index, &mut nvml.device) };
        if code != 0 {
            return Err(format!("NVML has no GPU {index}: {}", nvml_error(code)));
        }
        let mut buf = [0 as c_char; 96];
        // SAFETY: a valid device and a buffer of the length passed.
        if unsafe { get_name(nvml.device, buf.as_mut_ptr(), buf.len() as c_uint) } == 0 {
            // SAFETY: on success NVML wrote a NUL-terminated string into buf.
            let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
            nvml.name = name.to_string_lossy().into_owned();
        }
        match nvml.energy {
            None => {
                nvml.energy_error =
                    "nvmlDeviceGetTotalEnergyConsumption missing from the library".to_string();
            }
            Some(total_energy) => {
                let mut mj: c_ulonglong = 0;
                // SAFETY: a valid device and out-pointer.
                let code = unsafe { total_energy(nvml.device, &mut mj) };
                if code != 0 {
                    nvml.energy_error = nvml_error(code);
                    nvml.energy = None;
                }
            }
        }
        Ok(nvml)
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_library: &str, _index: u32) -> Result<Nvml, String> {
        Err("NVML is only loaded on Linux".to_string())
    }

    /// Energy since the driver loaded, mJ.
    fn total_energy_mj(&self) -> Option<u64> {
        let f = self.energy?;
        let mut mj: c_ulonglong = 0;
        // SAFETY: a valid device handle and out-pointer.
        (unsafe { f(self.device, &mut mj) } == 0).then_some(mj)
    }

    /// Current board power, mW.
    fn power_mw(&self) -> Option<u32> {
        let f = self.power?;
        let mut mw: c_uint = 0;
        // SAFETY: a valid device handle and out-pointer.
        (unsafe { f(self.device, &mut mw) } == 0).then_some(mw)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown {
            // SAFETY: balances the successful nvmlInit_v2 in `open`. The
            // library itself stays loaded (no dlclose), which is harmless.
            unsafe {
                shutdown();
            }
        }
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
            .map(|&(_, _, tdp, threads)| tdp / f64::from(threads))
            .collect();
        per_thread.sort_by(f64::total_cmp);
        let median = per_thread[per_thread.len() / 2];
        assert!(
            (median - UNKNOWN_CPU_WATTS_PER_THREAD).abs() < 1.0,
            "{median}"
        );
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
        let err = Nvml::open("libheadstart-no-such-library.so.1", 0).unwrap_err();
        assert!(err.starts_with("NVML not loadable"), "{err}");
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
        };
        assert_eq!(
            r.summary(),
            "energy 65.93 Wh in 5m02s = (CPU 9.10 Wh estimated, 108.5 W + GPU 50.00 Wh \
             measured, 596.0 W + RAM 0.84 Wh estimated, 10.0 W) x PUE 1.10"
        );
        assert!(!r.measured());
    }
}
