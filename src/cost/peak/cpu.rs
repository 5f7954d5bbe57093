//! The CPU as /proc/cpuinfo describes it, and its f32 FLOPs per cycle per
//! core by microarchitecture.
//!
//! The per-cycle figure is the number of FMA units x their width in f32
//! lanes x 2 (a multiply and an add). The ISA alone does not give it: Zen 4
//! executes AVX-512 on two 256-bit pipes (32, not 64), Intel client cores
//! with AVX-512 have one 512-bit FMA unit (32), while Intel's server cores
//! have two (64). Hypervisors often hide the model name ("AMD EPYC"), so
//! the rules look at the vendor, family and model numbers first.

/// What /proc/cpuinfo says about the first CPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuInfo {
    /// `vendor_id`: AuthenticAMD, GenuineIntel, ...
    pub vendor: String,
    /// `cpu family` (decimal, as the kernel prints it).
    pub family: u32,
    /// `model` (decimal).
    pub model: u32,
    pub stepping: u32,
    /// `model name`.
    pub model_name: String,
    /// `flags` (x86) or `Features` (Arm).
    pub flags: Vec<String>,
    /// `cpu MHz`: the clock the kernel reports (nominal or current).
    pub mhz: Option<f64>,
}

impl CpuInfo {
    /// Reads the first CPU's block of `text` (/proc/cpuinfo's format).
    pub fn parse(text: &str) -> Self {
        let mut info = CpuInfo::default();
        for line in text.lines() {
            if line.trim().is_empty() {
                // The first processor's block ends here; Arm lists its
                // features per core too, so one block is enough.
                if !info.vendor.is_empty() || !info.flags.is_empty() {
                    break;
                }
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "vendor_id" => info.vendor = value.to_string(),
                "cpu family" => info.family = value.parse().unwrap_or(0),
                "model" => info.model = value.parse().unwrap_or(0),
                "stepping" => info.stepping = value.parse().unwrap_or(0),
                "model name" => info.model_name = value.to_string(),
                "flags" | "Features" => {
                    info.flags = value.split_whitespace().map(str::to_string).collect()
                }
                "cpu MHz" => info.mhz = value.parse().ok().filter(|m: &f64| *m > 0.0),
                _ => {}
            }
        }
        info
    }

    /// This machine's /proc/cpuinfo (empty where there is none).
    pub fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
    }

    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// A name for the CPU: the model name, with the family and model
    /// numbers when the name is generic.
    pub fn name(&self) -> String {
        let name = if self.model_name.is_empty() {
            "unknown CPU"
        } else {
            &self.model_name
        };
        if self.family > 0 {
            format!("{name} (family {}, model {:#x})", self.family, self.model)
        } else {
            name.to_string()
        }
    }

    /// What identifies this kind of machine for the measured-peak cache.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.vendor, self.family, self.model, self.stepping, self.model_name
        )
    }
}

/// f32 FLOPs per cycle per core and the rule that gave them.
#[derive(Clone, Debug, PartialEq)]
pub struct PerCycle {
    pub flops: f64,
    pub rule: &'static str,
}

fn rule(flops: f64, rule: &'static str) -> PerCycle {
    PerCycle { flops, rule }
}

/// Intel family-6 models whose cores have two 512-bit FMA units:
/// Skylake-SP/Cascade Lake/Cooper Lake (0x55; most SKUs), Ice Lake-SP and
/// -D (0x6a, 0x6c), Sapphire Rapids (0x8f), Emerald Rapids (0xcf), Granite
/// Rapids (0xad, 0xae), Xeon Phi (0x57, 0x85).
const INTEL_TWO_512_FMA: &[u32] = &[0x55, 0x6a, 0x6c, 0x8f, 0xcf, 0xad, 0xae, 0x57, 0x85];

/// f32 FLOPs per cycle per core of `cpu`, by microarchitecture where the
/// table knows it, else by its widest FMA.
pub fn flops_per_cycle(cpu: &CpuInfo) -> PerCycle {
    let avx512 = cpu.has("avx512f");
    let fma256 = cpu.has("avx2") && cpu.has("fma");
    let amd = cpu.vendor == "AuthenticAMD" || cpu.vendor == "HygonGenuine";
    if amd {
        match cpu.family {
            26 if avx512 && matches!(cpu.model, 0x20..=0x2f | 0x60..=0x6f) => {
                return rule(32.0, "Zen 5 mobile: AVX-512 on two 256-bit FMA pipes");
            }
            26 if avx512 => return rule(64.0, "Zen 5: two 512-bit FMA pipes"),
            26 => return rule(32.0, "Zen 5 without AVX-512 exposed: two 256-bit FMA pipes"),
            25 if avx512 => {
                return rule(
                    32.0,
                    "Zen 4: AVX-512 on two 256-bit FMA pipes (double-pumped)",
                );
            }
            25 => return rule(32.0, "Zen 3: two 256-bit FMA pipes"),
            23 | 24 if cpu.model >= 0x30 => return rule(32.0, "Zen 2: two 256-bit FMA pipes"),
            23 | 24 => {
                return rule(16.0, "Zen 1/Zen+: two 128-bit FMA pipes (AVX2 in halves)");
            }
            _ => {}
        }
    }
    if cpu.vendor == "GenuineIntel" && cpu.family == 6 && avx512 {
        let name = &cpu.model_name;
        let one_unit_xeon = cpu.model == 0x55
            && (name.contains("Silver")
                || name.contains("Bronze")
                || (name.contains("Gold 5") && !name.contains("5122") && !name.contains("5222")));
        if one_unit_xeon {
            return rule(
                32.0,
                "Intel Xeon Silver/Bronze/Gold 5xxx (Skylake-SP): one 512-bit FMA unit",
            );
        }
        if INTEL_TWO_512_FMA.contains(&cpu.model) {
            return rule(64.0, "Intel server core: two 512-bit FMA units");
        }
        return rule(32.0, "Intel client core with AVX-512: one 512-bit FMA unit");
    }
    if avx512 {
        return rule(
            32.0,
            "AVX-512, microarchitecture not in the table: two 256-bit FMA pipes assumed",
        );
    }
    if fma256 {
        return rule(32.0, "AVX2 + FMA: two 256-bit FMA units");
    }
    if cpu.has("avx") {
        return rule(
            16.0,
            "AVX without FMA: one 256-bit multiply and one add per cycle",
        );
    }
    if cpu.has("asimd") {
        return rule(16.0, "Arm NEON: two 128-bit FMA pipes assumed");
    }
    rule(8.0, "no AVX: 128-bit SSE multiply and add")
}

/// The table's peak in FLOP/s: `threads` cores at the reported clock (2.5
/// GHz where none is reported).
pub fn table_flops(cpu: &CpuInfo, threads: usize) -> (f64, PerCycle, f64) {
    let per_cycle = flops_per_cycle(cpu);
    let ghz = cpu.mhz.unwrap_or(2500.0) / 1000.0;
    (threads as f64 * ghz * 1e9 * per_cycle.flops, per_cycle, ghz)
}

/// The highest clock the kernel says the CPU reaches, GHz
/// (cpufreq's `cpuinfo_max_freq`; virtual machines rarely have it).
pub fn max_ghz() -> Option<f64> {
    std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(|khz| khz / 1e6)
        .filter(|g| *g > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(vendor: &str, family: u32, model: u32, name: &str, flags: &str) -> CpuInfo {
        CpuInfo {
            vendor: vendor.into(),
            family,
            model,
            stepping: 1,
            model_name: name.into(),
            flags: flags.split_whitespace().map(str::to_string).collect(),
            mhz: Some(2450.0),
        }
    }

    const AVX2: &str = "sse sse2 avx fma avx2";
    const AVX512: &str = "sse sse2 avx fma avx2 avx512f avx512bw avx512vl";

    #[test]
    fn zen_4_counts_32_despite_avx512() {
        let genoa = cpu(
            "AuthenticAMD",
            25,
            0x11,
            "AMD EPYC 9654 96-Core Processor",
            AVX512,
        );
        let p = flops_per_cycle(&genoa);
        assert_eq!(p.flops, 32.0);
        assert!(p.rule.contains("Zen 4"), "{}", p.rule);
        // A hypervisor's generic name changes nothing.
        let masked = cpu("AuthenticAMD", 25, 0x11, "AMD EPYC", AVX512);
        assert_eq!(flops_per_cycle(&masked).flops, 32.0);
    }

    #[test]
    fn zen_5_counts_64_and_its_mobile_parts_32() {
        let turin = cpu("AuthenticAMD", 26, 0x02, "AMD EPYC 9755", AVX512);
        let p = flops_per_cycle(&turin);
        assert_eq!(p.flops, 64.0);
        assert!(p.rule.contains("Zen 5"), "{}", p.rule);
        let granite_ridge = cpu("AuthenticAMD", 26, 0x44, "AMD Ryzen 9 9950X", AVX512);
        assert_eq!(flops_per_cycle(&granite_ridge).flops, 64.0);
        let strix = cpu("AuthenticAMD", 26, 0x24, "AMD Ryzen AI 9 HX 370", AVX512);
        assert_eq!(flops_per_cycle(&strix).flops, 32.0);
    }

    #[test]
    fn zen_3_and_older_amd() {
        let milan = cpu("AuthenticAMD", 25, 0x01, "AMD EPYC", AVX2);
        let p = flops_per_cycle(&milan);
        assert_eq!(p.flops, 32.0);
        assert!(p.rule.contains("Zen 3"), "{}", p.rule);
        let rome = cpu("AuthenticAMD", 23, 0x31, "AMD EPYC 7742", AVX2);
        assert_eq!(flops_per_cycle(&rome).flops, 32.0);
        let naples = cpu("AuthenticAMD", 23, 0x01, "AMD EPYC 7601", AVX2);
        assert_eq!(flops_per_cycle(&naples).flops, 16.0);
    }

    #[test]
    fn intel_server_cores_count_64_and_client_cores_32() {
        let icx = cpu(
            "GenuineIntel",
            6,
            0x6a,
            "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
            AVX512,
        );
        let p = flops_per_cycle(&icx);
        assert_eq!(p.flops, 64.0);
        assert!(p.rule.contains("two 512-bit"), "{}", p.rule);
        let spr = cpu(
            "GenuineIntel",
            6,
            0x8f,
            "Intel(R) Xeon(R) Platinum 8480+",
            AVX512,
        );
        assert_eq!(flops_per_cycle(&spr).flops, 64.0);
        let silver = cpu(
            "GenuineIntel",
            6,
            0x55,
            "Intel(R) Xeon(R) Silver 4114",
            AVX512,
        );
        assert_eq!(flops_per_cycle(&silver).flops, 32.0);
        let tiger = cpu(
            "GenuineIntel",
            6,
            0x8c,
            "11th Gen Intel(R) Core(TM) i7-1165G7",
            AVX512,
        );
        assert_eq!(flops_per_cycle(&tiger).flops, 32.0);
        let skylake = cpu("GenuineIntel", 6, 0x5e, "Intel(R) Core(TM) i7-6700K", AVX2);
        let p = flops_per_cycle(&skylake);
        assert_eq!(p.flops, 32.0);
        assert!(p.rule.contains("AVX2"), "{}", p.rule);
    }

    #[test]
    fn unknown_cpus_fall_back_by_isa() {
        let unknown512 = cpu("SomeVendor", 1, 1, "x", AVX512);
        let p = flops_per_cycle(&unknown512);
        assert_eq!(p.flops, 32.0);
        assert!(p.rule.contains("not in the table"), "{}", p.rule);
        assert_eq!(
            flops_per_cycle(&cpu("", 0, 0, "", "sse sse2 avx")).flops,
            16.0
        );
        assert_eq!(flops_per_cycle(&cpu("", 0, 0, "", "fp asimd")).flops, 16.0);
        assert_eq!(flops_per_cycle(&cpu("", 0, 0, "", "sse sse2")).flops, 8.0);
    }

    #[test]
    fn parses_the_first_cpu_of_proc_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                    model name\t: AMD EPYC\nstepping\t: 1\ncpu MHz\t\t: 2445.404\n\
                    flags\t\t: fpu sse avx2 fma\n\nprocessor\t: 1\nvendor_id\t: Other\n";
        let c = CpuInfo::parse(text);
        assert_eq!(c.vendor, "AuthenticAMD");
        assert_eq!((c.family, c.model, c.stepping), (25, 1, 1));
        assert_eq!(c.model_name, "AMD EPYC");
        assert_eq!(c.mhz, Some(2445.404));
        assert!(c.has("avx2") && c.has("fma") && !c.has("avx512f"));
        assert_eq!(c.name(), "AMD EPYC (family 25, model 0x1)");
        let (flops, per_cycle, ghz) = table_flops(&c, 2);
        assert_eq!(per_cycle.flops, 32.0);
        assert!((ghz - 2.445404).abs() < 1e-9);
        assert!((flops - 2.0 * 2.445404e9 * 32.0).abs() < 1.0);
    }
}
