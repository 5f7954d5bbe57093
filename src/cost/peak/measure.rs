//! The CPU's sustained f32 peak, measured: a loop of fused multiply-adds on
//! many independent accumulators (enough to cover the FMA latency on every
//! pipe), run on every core at once, timed, and cached per machine.
//!
//! Hand-written because the figure must come from the widest FMA the CPU
//! runs at its sustained (not nominal) clock; a general benchmarking crate
//! measures code, it does not supply this loop. The loop uses `std::arch`
//! intrinsics chosen at run time (AVX-512F, else AVX2 + FMA) and portable
//! code elsewhere, and plain `std::thread` (one thread per core, started
//! together at a barrier).

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Which loop runs: the widest one the CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// 16 chains of 512-bit FMAs.
    Avx512,
    /// 12 chains of 256-bit FMAs.
    Avx2Fma,
    /// 16 chains of 8 f32 in portable code.
    Portable,
}

/// Independent accumulator chains per kernel: at least FMA latency (4
/// cycles) x FMA units (2), with room to spare, within the register file.
const CHAINS_512: usize = 16;
const CHAINS_256: usize = 12;
const CHAINS_PORTABLE: usize = 16;

impl Kernel {
    /// The widest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2Fma;
            }
        }
        Kernel::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "AVX-512 FMA, 16 chains",
            Kernel::Avx2Fma => "AVX2 FMA, 12 chains",
            Kernel::Portable => "portable multiply-add, 16 chains of 8",
        }
    }

    /// f32 FLOPs one iteration of the loop does.
    pub fn flops_per_iter(self) -> f64 {
        let (chains, lanes) = match self {
            Kernel::Avx512 => (CHAINS_512, 16),
            Kernel::Avx2Fma => (CHAINS_256, 8),
            Kernel::Portable => (CHAINS_PORTABLE, 8),
        };
        (chains * lanes * 2) as f64
    }

    /// Runs `iters` iterations; returns a value that depends on all of
    /// them, so that none can be optimised away.
    pub fn run(self, iters: u64) -> f32 {
        let (m, a) = (
            std::hint::black_box(0.999f32),
            std::hint::black_box(0.001f32),
        );
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` returned this kernel only where the CPU has AVX-512F.
            Kernel::Avx512 => unsafe { x86::fma512(iters, m, a) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` returned this kernel only where the CPU has AVX2 and FMA.
            Kernel::Avx2Fma => unsafe { x86::fma256(iters, m, a) },
            _ => portable(iters, m, a),
        }
    }
}

/// acc = acc x m + a on every chain: with m < 1 each value tends to
/// a / (1 - m), so nothing overflows or goes subnormal.
fn portable(iters: u64, m: f32, a: f32) -> f32 {
    let mut acc = [[1.0f32; 8]; CHAINS_PORTABLE];
    for _ in 0..iters {
        for chain in acc.iter_mut() {
            for v in chain.iter_mut() {
                // Arm has FMA in its base ISA; elsewhere `mul_add` could be
                // a library call, so multiply and add.
                *v = if cfg!(target_arch = "aarch64") {
                    v.mul_add(m, a)
                } else {
                    *v * m + a
                };
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{CHAINS_256, CHAINS_512};

    #[target_feature(enable = "avx512f")]
    pub(super) fn fma512(iters: u64, m: f32, a: f32) -> f32 {
        let (vm, va) = (_mm512_set1_ps(m), _mm512_set1_ps(a));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS_512];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, vm, va);
            }
        }
        let mut sum = _mm512_setzero_ps();
        for v in acc {
            sum = _mm512_add_ps(sum, v);
        }
        _mm512_reduce_add_ps(sum)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fma256(iters: u64, m: f32, a: f32) -> f32 {
        let (vm, va) = (_mm256_set1_ps(m), _mm256_set1_ps(a));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS_256];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, vm, va);
            }
        }
        let mut sum = _mm256_setzero_ps();
        for v in acc {
            sum = _mm256_add_ps(sum, v);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds the 8 f32 the unaligned store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        lanes.iter().sum()
    }
}

/// One measurement of the sustained peak.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub flops_per_s: f64,
    pub threads: usize,
    /// The loop that ran ([`Kernel::name`]).
    pub kernel: String,
    /// Wall seconds the measurement took, calibration included.
    pub seconds: f64,
}

/// Runs `kernel` for `iters` iterations on `threads` threads started
/// together; returns the wall seconds from the start to the last finish.
fn timed_run(kernel: Kernel, threads: usize, iters: u64) -> f64 {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    std::hint::black_box(kernel.run(iters))
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        for h in handles {
            let _ = h.join();
        }
        t0.elapsed().as_secs_f64()
    })
}

/// Measures the sustained peak on `threads` threads: the loop is first
/// sized on one thread to take about `seconds / 3`, then run three times on
/// all threads; the best of the three counts (a busy machine only slows a
/// run down).
pub fn measure(threads: usize, seconds: f64) -> Measured {
    let started = Instant::now();
    let kernel = Kernel::detect();
    let threads = threads.max(1);
    let mut iters: u64 = 1 << 12;
    let mut took = 0.0;
    while iters < 1 << 40 {
        let t0 = Instant::now();
        std::hint::black_box(kernel.run(iters));
        took = t0.elapsed().as_secs_f64();
        if took > 0.01 {
            break;
        }
        iters *= 4;
    }
    let per_run = (seconds / 3.0).max(0.01);
    let iters = ((iters as f64 * per_run / took.max(1e-9)) as u64).max(1);
    let best = (0..3)
        .map(|_| timed_run(kernel, threads, iters))
        .fold(f64::INFINITY, f64::min);
    Measured {
        flops_per_s: threads as f64 * iters as f64 * kernel.flops_per_iter() / best,
        threads,
        kernel: kernel.name().to_string(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A cached measurement and the machine it was made on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The CPU ([`super::cpu::CpuInfo::key`]), thread count and loop
    /// version the figure belongs to.
    pub key: String,
    pub measured: Measured,
    /// Seconds since the Unix epoch when it was measured.
    pub at_unix: u64,
}

/// Bump when the loop changes, so that old figures are measured again.
const LOOP_VERSION: u32 = 1;

/// The cache key of `cpu_key` measured on `threads` threads.
pub fn cache_key(cpu_key: &str, threads: usize) -> String {
    format!("v{LOOP_VERSION}|{cpu_key}|{threads} threads")
}

/// Where the measurement for `key` is kept under `dir`: one small JSON
/// file per machine kind, named by a hash of the key.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(key.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("cpu-{hex}.json"))
}

/// The cached measurement for `key` in `dir`, if one is there and is for
/// this key (an unreadable file is a miss: it is measured again and
/// replaced).
pub fn read_cached(dir: &Path, key: &str) -> Option<Measured> {
    let text = std::fs::read_to_string(cache_path(dir, key)).ok()?;
    let entry: CacheEntry = serde_json::from_str(&text).ok()?;
    (entry.key == key && entry.measured.flops_per_s.is_finite() && entry.measured.flops_per_s > 0.0)
        .then_some(entry.measured)
}

/// Saves `measured` for `key` in `dir`, atomically; returns the file.
pub fn write_cached(dir: &Path, key: &str, measured: &Measured) -> Result<PathBuf> {
    let path = cache_path(dir, key);
    let at_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::fsutil::write_json_atomic(
        &path,
        &CacheEntry {
            key: key.to_string(),
            measured: measured.clone(),
            at_unix,
        },
    )
    .with_context(|| format!("caching the measured CPU peak in {}", dir.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_computes_the_same_fixed_point() {
        // acc -> a / (1 - m) = 1 from 1: every lane stays 1 (within rounding).
        for kernel in [Kernel::detect(), Kernel::Portable] {
            let lanes = kernel.flops_per_iter() / 2.0;
            let sum = kernel.run(1000) as f64;
            assert!((sum - lanes).abs() < 1e-3 * lanes, "{kernel:?}: {sum}");
        }
    }

    #[test]
    fn the_measured_peak_is_plausible() {
        let cpu = super::super::cpu::CpuInfo::read();
        let m = measure(2, 0.15);
        assert_eq!(m.threads, 2);
        assert!(m.flops_per_s > 1e9, "{m:?}");
        // No core sustains more than its FMA units at the highest clock
        // (6 GHz where the kernel does not say), with 1.5x for slack.
        let per_cycle = super::super::cpu::flops_per_cycle(&cpu).flops;
        let ghz = super::super::cpu::max_ghz().unwrap_or(6.0);
        let bound = 2.0 * per_cycle * ghz * 1e9 * 1.5;
        assert!(m.flops_per_s < bound, "{m:?} over {bound:e}");
    }

    #[test]
    fn the_cache_round_trips_and_is_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let key = cache_key("AuthenticAMD|25|1|1|AMD EPYC", 2);
        assert!(read_cached(dir.path(), &key).is_none());
        let m = Measured {
            flops_per_s: 229e9,
            threads: 2,
            kernel: Kernel::Avx2Fma.name().into(),
            seconds: 0.3,
        };
        let path = write_cached(dir.path(), &key, &m).unwrap();
        assert!(path.starts_with(dir.path()));
        assert_eq!(read_cached(dir.path(), &key), Some(m.clone()));
        // Another thread count or CPU is another entry.
        let other = cache_key("AuthenticAMD|25|1|1|AMD EPYC", 4);
        assert_ne!(cache_path(dir.path(), &other), path);
        assert!(read_cached(dir.path(), &other).is_none());
        // A file whose key does not match (a hash collision, an edit) or
        // that does not parse is a miss.
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_cached(dir.path(), &key).is_none());
        write_cached(dir.path(), &key, &m).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("25|1|1", "26|1|1");
        std::fs::write(&path, text).unwrap();
        assert!(read_cached(dir.path(), &key).is_none());
        // No temporary file is left beside it.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }
}
