//! What /proc tells about the machine and this process: the CPU model and
//! count, the process's CPU time and resident memory, the machine's memory,
//! and the GPU model from the NVIDIA driver.

use std::fs;
use std::path::{Path, PathBuf};

pub(super) fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown CPU".to_string())
}

pub(super) fn logical_cpus(cpuinfo: &str) -> usize {
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

/// Field `n` (1-based, as proc(5) numbers them, 3 or more) of a
/// /proc/PID/stat line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn stat_field(stat: &str, n: usize) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// utime + stime (fields 14 and 15 of /proc/PID/stat), in clock ticks.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    Some(stat_field(stat, 14)? + stat_field(stat, 15)?)
}

/// Minor + major page faults (fields 10 and 12 of /proc/PID/stat).
fn parse_stat_faults(stat: &str) -> Option<u64> {
    Some(stat_field(stat, 10)? + stat_field(stat, 12)?)
}

/// This process's CPU time and page faults so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessUsage {
    /// User + system CPU seconds, all threads.
    pub cpu_seconds: f64,
    /// Minor + major page faults.
    pub page_faults: u64,
}

/// [`ProcessUsage`] from /proc/self/stat (`None` where there is none).
pub fn process_usage() -> Option<ProcessUsage> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    Some(ProcessUsage {
        cpu_seconds: parse_stat_ticks(&stat)? as f64 / clock_ticks_per_second(),
        page_faults: parse_stat_faults(&stat)?,
    })
}

pub(super) fn read_process_ticks() -> Option<u64> {
    parse_stat_ticks(&fs::read_to_string("/proc/self/stat").ok()?)
}

/// Clock ticks per second for /proc/self/stat: `sysconf(_SC_CLK_TCK)` on
/// Linux, else 100 (USER_HZ is 100 on every mainstream Linux architecture).
pub(super) fn clock_ticks_per_second() -> f64 {
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

/// Resets this process's peak resident memory (VmHWM) to what it holds now
/// (`5` into /proc/self/clear_refs, Linux 4.0 and later); false where
/// that cannot be done.
pub fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak resident memory (VmHWM) since it started or since
/// [`reset_peak_rss`], GiB.
pub fn read_peak_rss_gib() -> Option<f64> {
    kib_line_as_gib(&fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")
}

pub(super) fn read_rss_gib() -> Option<f64> {
    kib_line_as_gib(&fs::read_to_string("/proc/self/status").ok()?, "VmRSS:")
}

pub(super) fn read_mem_total_gib() -> Option<f64> {
    kib_line_as_gib(&fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")
}

/// The `Model:` line of /proc/driver/nvidia/gpus/<PCI address>/information
/// for the `index`-th GPU in PCI order (NVML's default order too).
pub(super) fn proc_gpu_model(root: &Path, index: u32) -> Option<String> {
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
// Clock ticks
// ---------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_int, c_long};

    pub const SC_CLK_TCK: c_int = 2;

    unsafe extern "C" {
        pub fn sysconf(name: c_int) -> c_long;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::energy::tests::temp_dir;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let stat = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0 100";
        assert_eq!(parse_stat_ticks(stat), Some(175));
        assert_eq!(parse_stat_faults(stat), Some(7 + 9));
        assert_eq!(parse_stat_faults("garbage"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn this_process_usage_grows() {
        let a = process_usage().unwrap();
        let v: Vec<u8> = (0..64 << 20).map(|i| i as u8).collect();
        let b = process_usage().unwrap();
        assert!(std::hint::black_box(v).len() == 64 << 20);
        assert!(b.cpu_seconds >= a.cpu_seconds);
        // Touching 64 MiB of fresh memory faults pages in.
        assert!(b.page_faults > a.page_faults, "{a:?} {b:?}");
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
}
