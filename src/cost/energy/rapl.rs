//! The CPU's and RAM's energy from Linux powercap RAPL
//! (`/sys/class/powercap/intel-rapl:N`): finding the zones, reading their
//! counters and correcting a wrap between two reads.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Component, kwh_from_joules};

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

/// One RAPL zone's counter.
#[derive(Debug)]
pub(super) struct RaplZone {
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
    pub(super) fn read(&mut self) {
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
pub(super) enum Source {
    Rapl(Vec<RaplZone>),
    /// Estimated; the text says why it was not measured ("" = no reason to
    /// give).
    Estimate(String),
}

pub(super) fn rapl_component(zones: &[RaplZone], seconds: f64, scope: &str) -> Component {
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
pub(super) fn probe_rapl(root: &Path) -> (Source, Source) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
