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
    fn cpu_peak_is_positive_and_explained() {
        let p = cpu_peak(2);
        assert!(p.flops_per_s > 1e9);
        assert!(p.how.contains("2 core(s)"));
    }
}
