//! The CPU and RAM power estimated when RAPL cannot measure it: the CPU
//! from its TDP and this process's CPU share, the RAM by CodeCarbon's DIMM
//! model and this process's share of the machine's memory.

use serde::{Deserialize, Serialize};

use super::tdp::{CPU_TDP_FILE, cpu_spec};
use super::{Component, kwh_from_joules};

/// Watts per logical CPU assumed for a CPU model missing from the TDP table.
///
/// The shipped table's TDP per hardware thread runs from about 1.4 W (AMD
/// EPYC 9754, 128 cores) through 3-5 W (cloud Xeons, desktop Core i9) to
/// 6.7 W (Xeon Platinum 8124M); its median is 3.5 W. Unknown CPUs get 4 W,
/// a little above the median, so that an unrecognised machine is not made to
/// look cheaper than a recognised one. (CodeCarbon instead assumes a flat
/// 85 W TDP for an unknown CPU, whatever its size.)
pub const UNKNOWN_CPU_WATTS_PER_THREAD: f64 = 4.0;

/// Watts per DIMM in CodeCarbon's RAM model on x86.
pub const RAM_WATTS_PER_DIMM_X86: f64 = 5.0;
/// Watts per DIMM in CodeCarbon's RAM model on ARM.
pub const RAM_WATTS_PER_DIMM_ARM: f64 = 1.5;

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
/// documentation of [`energy`](super) for why this differs. With the
/// machine's memory unknown, CodeCarbon's process-mode figure is used.
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
// Estimated components of a reading
// ---------------------------------------------------------------------------

/// CPU seconds over (wall seconds x logical CPUs); 0 for no time.
pub(super) fn cpu_share(cpu_seconds: f64, seconds: f64, logical_cpus: usize) -> f64 {
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
pub(super) fn estimated_cpu(
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
pub(super) fn estimated_ram(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::energy::JOULES_PER_KWH;
    use crate::cost::energy::tests::close;

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
}
