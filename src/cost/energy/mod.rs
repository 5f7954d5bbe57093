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
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod estimate;
mod gpu;
mod procfs;
mod rapl;
mod tdp;

pub use estimate::{
    CpuEstimate, RAM_WATTS_PER_DIMM_ARM, RAM_WATTS_PER_DIMM_X86, RamEstimate,
    UNKNOWN_CPU_WATTS_PER_THREAD, cpu_estimate, estimate_cpu_watts, ram_dimms, ram_estimate,
    ram_floor_watts, ram_watts,
};
pub use gpu::NVML_LIBRARY;
pub use procfs::{ProcessUsage, process_usage, read_peak_rss_gib, reset_peak_rss};
pub use rapl::counter_delta;
pub use tdp::{CPU_TDP_FILE, CpuSpec, GPU_TDP_FILE, cpu_spec, cpu_tdp, gpu_tdp};

use estimate::{cpu_share, estimated_cpu, estimated_ram};
use gpu::{Gpu, gpu_component, gpu_name, open_gpu};
use procfs::{
    clock_ticks_per_second, cpu_model, logical_cpus, read_mem_total_gib, read_process_ticks,
    read_rss_gib,
};
use rapl::{RaplZone, Source, probe_rapl, rapl_component};

/// Joules in one kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3.6e6;

/// Kilowatt-hours from joules (kWh = J / 3.6e6).
pub fn kwh_from_joules(joules: f64) -> f64 {
    joules / JOULES_PER_KWH
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(super) fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1e-12)
    }

    /// A fresh, empty directory under the system temp dir.
    pub(super) fn temp_dir(tag: &str) -> PathBuf {
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
