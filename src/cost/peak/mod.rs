//! The machine's peak FLOP rate, for model FLOPs utilisation (MFU): on a
//! CPU the sustained peak measured by an FMA loop ([`measure`]), with the
//! per-microarchitecture table ([`cpu`]) as the fallback and the
//! comparison; on a GPU a data-sheet table; `--peak-gflops` overrides both.

pub mod cpu;
pub mod measure;

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Result, bail};

pub use cpu::CpuInfo;
pub use measure::Measured;

/// Peak f32 FLOP/s and how it was derived.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    pub flops_per_s: f64,
    pub how: String,
}

/// A peak given by the user (`--peak-gflops`), in GFLOP/s.
pub fn from_gflops(gflops: f64) -> Result<Peak> {
    if !(gflops.is_finite() && gflops > 0.0) {
        bail!("--peak-gflops {gflops}: give the machine's peak in GFLOP/s, a positive number");
    }
    Ok(Peak {
        flops_per_s: gflops * 1e9,
        how: format!("--peak-gflops {gflops}"),
    })
}

/// The table's peak of `cpu` on `threads` cores, as a [`Peak`].
pub fn cpu_table_peak(cpu: &CpuInfo, threads: usize) -> Peak {
    let (flops, per_cycle, ghz) = cpu::table_flops(cpu, threads);
    Peak {
        flops_per_s: flops,
        how: format!(
            "table: {}, {threads} core(s) x {ghz:.2} GHz x {} f32 FLOP/cycle = {:.1} GFLOP/s ({})",
            cpu.name(),
            per_cycle.flops,
            flops / 1e9,
            per_cycle.rule
        ),
    }
}

/// The CPU's peak on `threads` cores: measured by the FMA loop of
/// [`measure`] (cached per machine under `$HEADSTART_HOME/peak`, and once
/// per process), the table's figure where the loop's is not usable. With
/// `refresh` (what `headstart bench` asks for) the loop runs again even
/// when a figure is cached, and the higher of the two counts and is kept:
/// a reading taken while the machine was busy (a build finishing, say)
/// would otherwise stay in the cache and inflate every MFU after it.
pub fn cpu_peak(threads: usize, refresh: bool) -> Peak {
    static MEMO: Mutex<Vec<(usize, Peak)>> = Mutex::new(Vec::new());
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = memo.iter().find(|(t, _)| *t == threads)
        && !refresh
    {
        return p.clone();
    }
    memo.retain(|(t, _)| *t != threads);
    let dir = crate::assets::home().join("peak");
    // A dev build reads the cache but leaves it to release builds to
    // write: its tests measure while other tests load the cores.
    let write = !cfg!(debug_assertions);
    let p = cpu_peak_in(&dir, write, &CpuInfo::read(), threads, refresh, |t| {
        measure::measure(t, MEASURE_SECONDS)
    });
    memo.push((threads, p.clone()));
    p
}

/// Seconds the measuring loop runs (calibration aside).
pub const MEASURE_SECONDS: f64 = 0.3;

/// [`cpu_peak`] with its cache directory, CPU and loop given: the cached
/// figure for this CPU and thread count if there is one, else `run`'s
/// (saved when `write`, unless under half the table's figure: a busy
/// machine's); the table's if the loop gives nothing usable. With
/// `refresh`, `run` measures even when a figure is cached; the higher one
/// counts and replaces the cached one.
pub fn cpu_peak_in(
    dir: &Path,
    write: bool,
    cpu: &CpuInfo,
    threads: usize,
    refresh: bool,
    run: impl FnOnce(usize) -> Measured,
) -> Peak {
    let table = cpu_table_peak(cpu, threads);
    let key = measure::cache_key(&cpu.key(), threads);
    let path = measure::cache_path(dir, &key);
    let said = |m: &Measured, note: &str| Peak {
        flops_per_s: m.flops_per_s,
        how: format!(
            "measured: {:.1} GFLOP/s sustained by an FMA loop ({}) on {} thread(s){note}; {}",
            m.flops_per_s / 1e9,
            m.kernel,
            m.threads,
            table.how
        ),
    };
    let cached = measure::read_cached(dir, &key);
    if let Some(c) = &cached
        && !refresh
    {
        return said(
            c,
            &format!(
                " (cached in {}; delete it to measure again)",
                path.display()
            ),
        );
    }
    let m = run(threads);
    let usable = m.flops_per_s.is_finite() && m.flops_per_s > 0.0;
    if let Some(c) = cached
        && !(usable && m.flops_per_s > c.flops_per_s)
    {
        let again = if usable {
            format!("{:.1} GFLOP/s", m.flops_per_s / 1e9)
        } else {
            "nothing usable".to_string()
        };
        return said(
            &c,
            &format!(
                " (cached in {}; measured again at {again}, the cached figure is higher and kept)",
                path.display()
            ),
        );
    }
    if !usable {
        return table;
    }
    let note = if m.flops_per_s < 0.5 * table.flops_per_s {
        " (under half the table's figure, so the machine looked busy: not cached)".to_string()
    } else if !write {
        " (a dev build: not cached)".to_string()
    } else {
        match measure::write_cached(dir, &key, &m) {
            Ok(p) => format!(" (cached in {})", p.display()),
            Err(e) => format!(" (not cached: {e:#})"),
        }
    };
    said(&m, &note)
}

/// Dense f32 peaks (no tensor cores, no sparsity) of common NVIDIA GPUs,
/// TFLOP/s, from NVIDIA's data sheets.
const GPU_PEAKS: &[(&str, f64)] = &[
    ("H200", 67.0),
    ("H100 PCIe", 51.0),
    ("H100", 67.0),
    ("A100", 19.5),
    ("A10G", 31.2),
    ("A10", 31.2),
    ("L40S", 91.6),
    ("L4", 30.3),
    ("V100", 15.7),
    ("T4", 8.1),
    ("RTX 4090", 82.6),
    ("RTX 3090", 35.6),
];

/// The f32 peak of the GPU named `name` (as the driver reports it), if known.
pub fn gpu_peak_of(name: &str) -> Option<Peak> {
    GPU_PEAKS
        .iter()
        .find(|(k, _)| name.contains(k))
        .map(|(k, t)| Peak {
            flops_per_s: t * 1e12,
            how: format!("{name}: {t} TFLOP/s dense f32 (data-sheet table, entry {k})"),
        })
}

/// The first GPU's f32 peak, its name read from the NVIDIA driver's /proc
/// entry; an unknown GPU is taken as an A100 and said to be.
pub fn gpu_peak() -> Peak {
    let name = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .and_then(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown GPU".into());
    gpu_peak_of(&name).unwrap_or(Peak {
        flops_per_s: 19.5e12,
        how: format!("{name}: not in the table; assumed 19.5 TFLOP/s (A100 f32)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_table_lookup() {
        let p = gpu_peak_of("NVIDIA H100 80GB HBM3").unwrap();
        assert_eq!(p.flops_per_s, 67e12);
        assert_eq!(gpu_peak_of("NVIDIA H100 PCIe").unwrap().flops_per_s, 51e12);
        assert_eq!(gpu_peak_of("Tesla T4").unwrap().flops_per_s, 8.1e12);
        assert!(gpu_peak_of("Voodoo 2").is_none());
    }

    fn milan() -> CpuInfo {
        CpuInfo {
            vendor: "AuthenticAMD".into(),
            family: 25,
            model: 1,
            stepping: 1,
            model_name: "AMD EPYC".into(),
            flags: vec!["avx2".into(), "fma".into()],
            mhz: Some(2450.0),
        }
    }

    fn measured(gflops: f64) -> Measured {
        Measured {
            flops_per_s: gflops * 1e9,
            threads: 2,
            kernel: "test loop".into(),
            seconds: 0.1,
        }
    }

    #[test]
    fn the_override_is_checked_and_said() {
        let p = from_gflops(200.0).unwrap();
        assert_eq!(p.flops_per_s, 200e9);
        assert_eq!(p.how, "--peak-gflops 200");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = from_gflops(bad).unwrap_err().to_string();
            assert!(e.contains("--peak-gflops"), "{e}");
        }
    }

    #[test]
    fn the_table_peak_says_its_rule() {
        let p = cpu_table_peak(&milan(), 2);
        assert!((p.flops_per_s - 2.0 * 2.45e9 * 32.0).abs() < 1.0);
        assert!(p.how.starts_with("table: AMD EPYC (family 25"), "{}", p.how);
        says(&p, "2 core(s) x 2.45 GHz x 32");
        says(&p, "Zen 3");
    }

    /// `p`'s account of its figure mentions `text`.
    fn says(p: &Peak, text: &str) {
        assert!(p.how.contains(text), "{}", p.how);
    }

    /// A loop that must not run: the figure is to come from the cache.
    fn unmeasured(_: usize) -> Measured {
        panic!("measured again despite the cache")
    }

    #[test]
    fn a_measured_peak_is_cached_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = cpu_peak_in(dir.path(), true, &milan(), 2, false, |_| measured(229.0));
        assert_eq!(first.flops_per_s, 229e9);
        assert!(
            first.how.starts_with("measured: 229.0 GFLOP/s"),
            "{}",
            first.how
        );
        says(&first, "cached in");
        says(&first, "table: ");
        // The second call reads the cache and does not measure.
        let second = cpu_peak_in(dir.path(), true, &milan(), 2, false, unmeasured);
        assert_eq!(second.flops_per_s, 229e9);
        says(&second, "delete it to measure again");
        // Another thread count measures again.
        let four = cpu_peak_in(dir.path(), true, &milan(), 4, false, |_| measured(400.0));
        assert_eq!(four.flops_per_s, 400e9);
    }

    #[test]
    fn a_busy_or_dev_measurement_is_used_but_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        // Under half the table's 156.8 GFLOP/s.
        let busy = cpu_peak_in(dir.path(), true, &milan(), 2, false, |_| measured(60.0));
        assert_eq!(busy.flops_per_s, 60e9);
        says(&busy, "not cached");
        let dev = cpu_peak_in(dir.path(), false, &milan(), 2, false, |_| measured(200.0));
        says(&dev, "a dev build: not cached");
        assert_eq!(std::fs::read_dir(dir.path()).map_or(0, |d| d.count()), 0);
        // A loop that gives nothing usable falls back on the table.
        let broken = cpu_peak_in(dir.path(), true, &milan(), 2, false, |_| measured(f64::NAN));
        assert!(broken.how.starts_with("table: "), "{}", broken.how);
    }

    #[test]
    fn a_refresh_keeps_the_higher_of_the_cached_and_the_new_figure() {
        let dir = tempfile::tempdir().unwrap();
        // a low first reading (the machine was busy) is cached
        cpu_peak_in(dir.path(), true, &milan(), 2, false, |_| measured(181.8));
        let higher = cpu_peak_in(dir.path(), true, &milan(), 2, true, |_| measured(240.9));
        assert_eq!(higher.flops_per_s, 240.9e9);
        says(&higher, "cached in");
        // it replaced the cached figure
        let read = cpu_peak_in(dir.path(), true, &milan(), 2, false, unmeasured);
        assert_eq!(read.flops_per_s, 240.9e9);
        // a lower new reading leaves the cached one in place, and says so
        let lower = cpu_peak_in(dir.path(), true, &milan(), 2, true, |_| measured(200.0));
        assert_eq!(lower.flops_per_s, 240.9e9);
        says(&lower, "measured again at 200.0 GFLOP/s");
        let broken = cpu_peak_in(dir.path(), true, &milan(), 2, true, |_| measured(f64::NAN));
        assert_eq!(broken.flops_per_s, 240.9e9);
        let kept = cpu_peak_in(dir.path(), true, &milan(), 2, false, unmeasured);
        assert_eq!(kept.flops_per_s, 240.9e9);
    }
}
