//! The shipped TDP tables (src/cost/data/cpu_tdp.csv, gpu_tdp.csv) and the
//! lookup of a CPU or GPU model in them.

use std::sync::LazyLock;

use serde::Deserialize;

use crate::cost::data;

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

/// Where the CPU table lives in the source tree, for messages.
pub const CPU_TDP_FILE: &str = "src/cost/data/cpu_tdp.csv";
/// Where the GPU table lives in the source tree, for messages.
pub const GPU_TDP_FILE: &str = "src/cost/data/gpu_tdp.csv";

/// A row of `cpu_tdp.csv`; its header comment names the sources.
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct CpuRow {
    /// Lower-case text matched as a token in the normalised `model name`.
    key: String,
    name: String,
    tdp_w: f64,
    threads: u32,
}

/// A row of `gpu_tdp.csv`; its header comment names the sources.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub(super) struct GpuRow {
    key: String,
    pub(super) name: String,
    pub(super) tdp_w: f64,
}

/// A key must be written as [`normalise`] leaves a name, or it never matches.
fn check_key(key: &str) -> Result<(), String> {
    data::non_empty("key", key)?;
    if normalise(key) == key {
        Ok(())
    } else {
        Err(format!(
            "key {key:?} is not normalised (lower case, single spaces): {:?}",
            normalise(key)
        ))
    }
}

fn parse_cpu_table(text: &str) -> Result<Vec<CpuRow>, String> {
    let rows = data::parse_csv(CPU_TDP_FILE, text, |r: &CpuRow| {
        check_key(&r.key)?;
        data::non_empty("name", &r.name)?;
        data::positive("tdp_w", r.tdp_w)?;
        data::positive("threads", f64::from(r.threads))
    })?;
    data::unique(CPU_TDP_FILE, &rows, |r| r.key.clone())?;
    Ok(rows)
}

fn parse_gpu_table(text: &str) -> Result<Vec<GpuRow>, String> {
    let rows = data::parse_csv(GPU_TDP_FILE, text, |r: &GpuRow| {
        check_key(&r.key)?;
        data::non_empty("name", &r.name)?;
        data::positive("tdp_w", r.tdp_w)
    })?;
    data::unique(GPU_TDP_FILE, &rows, |r| r.key.clone())?;
    Ok(rows)
}

/// The shipped CPU table, parsed on first use (the tests check that it
/// parses).
static CPU_TABLE: LazyLock<Vec<CpuRow>> =
    LazyLock::new(|| parse_cpu_table(data::CPU_TDP_CSV).unwrap_or_else(|e| panic!("{e}")));

/// The shipped GPU table, parsed on first use.
static GPU_TABLE: LazyLock<Vec<GpuRow>> =
    LazyLock::new(|| parse_gpu_table(data::GPU_TDP_CSV).unwrap_or_else(|e| panic!("{e}")));

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
    best_row(model, &CPU_TABLE, |row| &row.key).map(|row| CpuSpec {
        name: &row.name,
        tdp_w: row.tdp_w,
        threads: row.threads,
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
    gpu_row(name).map(|row| row.tdp_w)
}

pub(super) fn gpu_row(name: &str) -> Option<&'static GpuRow> {
    best_row(name, &GPU_TABLE, |row| &row.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::energy::UNKNOWN_CPU_WATTS_PER_THREAD;

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
            .map(|row| row.tdp_w / f64::from(row.threads))
            .collect();
        per_thread.sort_by(f64::total_cmp);
        let median = per_thread[per_thread.len() / 2];
        assert!(
            (median - UNKNOWN_CPU_WATTS_PER_THREAD).abs() < 1.0,
            "{median}"
        );
    }

    #[test]
    fn shipped_tdp_tables_keep_the_values_of_the_old_literals() {
        let cpu = parse_cpu_table(data::CPU_TDP_CSV).unwrap();
        let gpu = parse_gpu_table(data::GPU_TDP_CSV).unwrap();
        assert_eq!((cpu.len(), gpu.len()), (43, 36));
        assert_eq!(CPU_TABLE.len(), 43);
        let c = |key: &str| cpu.iter().find(|r| r.key == key).cloned().unwrap();
        let row = |key: &str, name: &str, tdp_w: f64, threads: u32| CpuRow {
            key: key.into(),
            name: name.into(),
            tdp_w,
            threads,
        };
        assert_eq!(
            c("epyc 7b13"),
            row("epyc 7b13", "AMD EPYC 7B13", 225.0, 128)
        );
        assert_eq!(
            c("epyc 9754"),
            row("epyc 9754", "AMD EPYC 9754", 360.0, 256)
        );
        assert_eq!(
            c("threadripper 3990x"),
            row(
                "threadripper 3990x",
                "AMD Ryzen Threadripper 3990X",
                280.0,
                128
            )
        );
        assert_eq!(
            c("xeon platinum 8480"),
            row(
                "xeon platinum 8480",
                "Intel Xeon Platinum 8480+",
                350.0,
                112
            )
        );
        assert_eq!(c("e5-2686 v4").tdp_w, 145.0);
        assert_eq!(c("i7-12700h").tdp_w, 45.0);
        assert_eq!(c("apple m3"), row("apple m3", "Apple M3", 22.0, 8));
        let g = |key: &str| gpu.iter().find(|r| r.key == key).cloned().unwrap();
        assert_eq!(
            g("h200 nvl"),
            GpuRow {
                key: "h200 nvl".into(),
                name: "NVIDIA H200 NVL".into(),
                tdp_w: 600.0
            }
        );
        assert_eq!(g("b200").tdp_w, 1000.0);
        assert_eq!(g("a100 80gb pcie").tdp_w, 300.0);
        assert_eq!(g("k80").tdp_w, 300.0);
        assert_eq!(g("rtx 5090").name, "NVIDIA GeForce RTX 5090");
        assert_eq!(g("mi300x").tdp_w, 750.0);
        // The file names its source in its header comment.
        assert!(data::CPU_TDP_CSV.starts_with("# CPU thermal design power"));
        assert!(data::CPU_TDP_CSV.contains("# Source: the vendors' published"));
        assert!(data::GPU_TDP_CSV.contains("# Source: the vendors' data sheets"));
    }

    #[test]
    fn malformed_tdp_rows_are_errors() {
        let head = "# comment\nkey,name,tdp_w,threads\n";
        let bad = |rows: &str| parse_cpu_table(&format!("{head}{rows}")).unwrap_err();
        assert!(
            bad("epyc 1,AMD EPYC 1,200,64\nepyc 2,AMD EPYC 2,lots,64\n")
                .starts_with("src/cost/data/cpu_tdp.csv line 4: ")
        );
        assert_eq!(
            bad("epyc 1,AMD EPYC 1,0,64\n"),
            "src/cost/data/cpu_tdp.csv line 3: tdp_w 0 is not a positive number"
        );
        assert_eq!(
            bad("epyc 1,AMD EPYC 1,200,0\n"),
            "src/cost/data/cpu_tdp.csv line 3: threads 0 is not a positive number"
        );
        assert!(bad("EPYC 1,AMD EPYC 1,200,64\n").contains("key \"EPYC 1\" is not normalised"));
        assert!(bad("epyc 1,AMD EPYC 1,200\n").starts_with("src/cost/data/cpu_tdp.csv: "));
        assert_eq!(
            bad("epyc 1,A,200,64\nepyc 1,B,100,32\n"),
            "src/cost/data/cpu_tdp.csv: \"epyc 1\" appears twice"
        );
        assert_eq!(bad(""), "src/cost/data/cpu_tdp.csv: no rows");
        let gpu = parse_gpu_table("key,name,tdp_w\nl4,NVIDIA L4,-72\n").unwrap_err();
        assert_eq!(
            gpu,
            "src/cost/data/gpu_tdp.csv line 2: tdp_w -72 is not a positive number"
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
}
