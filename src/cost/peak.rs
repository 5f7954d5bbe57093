//! The machine's peak FLOP rate, for model FLOPs utilisation (MFU).

/// Peak f32 FLOP/s and how it was derived.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    pub flops_per_s: f64,
    pub how: String,
}

/// f32 FLOPs per cycle per core from the widest FMA the CPU has:
/// two FMA pipes x lanes x 2 (multiply and add).
pub fn flops_per_cycle(avx512: bool, avx2_fma: bool) -> f64 {
    match (avx512, avx2_fma) {
        (true, _) => 64.0,
        (false, true) => 32.0,
        _ => 8.0,
    }
}

/// The CPU's peak from /proc/cpuinfo (features, clock) and `threads` cores.
pub fn cpu_peak(threads: usize) -> Peak {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("")
        .to_string();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let mhz = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(2500.0);
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let avx512 = has("avx512f");
    let fma = has("avx2") && has("fma");
    let per_cycle = flops_per_cycle(avx512, fma);
    Peak {
        flops_per_s: threads as f64 * mhz * 1e6 * per_cycle,
        how: format!(
            "{model}: {threads} core(s) x {:.2} GHz x {per_cycle} f32 FLOP/cycle ({})",
            mhz / 1000.0,
            if avx512 {
                "AVX-512 FMA"
            } else if fma {
                "AVX2 FMA"
            } else {
                "SSE"
            }
        ),
    }
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
    fn per_cycle_by_isa() {
        assert_eq!(flops_per_cycle(false, true), 32.0);
        assert_eq!(flops_per_cycle(true, true), 64.0);
        assert_eq!(flops_per_cycle(false, false), 8.0);
    }

    #[test]
    fn gpu_table_lookup() {
        let p = gpu_peak_of("NVIDIA H100 80GB HBM3").unwrap();
        assert_eq!(p.flops_per_s, 67e12);
        assert_eq!(gpu_peak_of("NVIDIA H100 PCIe").unwrap().flops_per_s, 51e12);
        assert_eq!(gpu_peak_of("Tesla T4").unwrap().flops_per_s, 8.1e12);
        assert!(gpu_peak_of("Voodoo 2").is_none());
    }

    #[test]
    fn cpu_peak_is_positive_and_explained() {
        let p = cpu_peak(2);
        assert!(p.flops_per_s > 1e9);
        assert!(p.how.contains("2 core(s)"));
    }
}
