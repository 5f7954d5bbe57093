//! Indiana University chest x-ray reports.
//!
//! The reports (`ecgen-radiology/N.xml`, one per study; fetched by
//! [`crate::assets::iu_reports_dir`]) carry the sections COMPARISON,
//! INDICATION, FINDINGS and IMPRESSION as
//! `<AbstractText Label="FINDINGS">...</AbstractText>` (self-closing when
//! empty), and MeSH terms as `<MeSH><major>..</major><automatic>..</automatic></MeSH>`.
//! We keep FINDINGS, IMPRESSION and the major MeSH terms, and label a report
//! `normal` when its major terms are exactly `normal`.
//!
//! Reference counts on the full set: 3,955 reports, 3,425 with FINDINGS,
//! 1,206 of those `normal`.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

/// Label of a report whose major MeSH terms are exactly `normal`.
pub const NORMAL: &str = "normal";
/// Label of every other report.
pub const ABNORMAL: &str = "abnormal";

/// Column names of the split CSV files, in order.
pub const CSV_COLUMNS: [&str; 6] = ["id", "findings", "impression", "mesh", "label", "report"];

/// One radiology report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The report's number (`IUXRId`, which is also the file name's stem),
    /// e.g. `"1"`.
    pub id: String,
    /// The FINDINGS section, entities decoded and trimmed; empty if absent.
    pub findings: String,
    /// The IMPRESSION section, likewise.
    pub impression: String,
    /// The major MeSH terms as in the XML, e.g. `["normal"]` or
    /// `["Opacity/lung/upper lobe/right", ...]`.
    pub mesh: Vec<String>,
}

impl Report {
    /// Whether the major MeSH terms are exactly `["normal"]`
    /// (case-insensitive).
    pub fn is_normal(&self) -> bool {
        matches!(self.mesh.as_slice(), [only] if only.trim().eq_ignore_ascii_case(NORMAL))
    }

    /// [`NORMAL`] or [`ABNORMAL`].
    pub fn label(&self) -> &'static str {
        if self.is_normal() { NORMAL } else { ABNORMAL }
    }

    /// Sort key: numeric ids in numeric order, then any others by text.
    fn sort_key(&self) -> (u64, &str) {
        (self.id.parse().unwrap_or(u64::MAX), &self.id)
    }
}

/// Parse every `*.xml` file in `dir`, sorted by numeric id.
pub fn read_reports(dir: &Path) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("xml"))
        {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        reports.push(parse_report(&text, &stem));
    }
    ensure!(!reports.is_empty(), "no .xml reports in {}", dir.display());
    reports.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(reports)
}

/// Parse one report. The id is the `id` attribute of `<IUXRId>`, else
/// `fallback_id` (the file name's stem).
pub fn parse_report(xml: &str, fallback_id: &str) -> Report {
    let id = elements(xml, "IUXRId")
        .find_map(|e| attribute(e.open_tag, "id"))
        .map(|id| decode_entities(id).trim().to_owned())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| fallback_id.to_owned());
    let section = |label: &str| {
        elements(xml, "AbstractText")
            .find(|e| attribute(e.open_tag, "Label").is_some_and(|l| l.eq_ignore_ascii_case(label)))
            .and_then(|e| e.content)
            .map(|c| decode_entities(c).trim().to_owned())
            .unwrap_or_default()
    };
    let mesh = elements(xml, "MeSH")
        .filter_map(|e| e.content)
        .flat_map(|block| elements(block, "major").filter_map(|e| e.content))
        .map(|term| decode_entities(term).trim().to_owned())
        .filter(|term| !term.is_empty())
        .collect();
    Report {
        id,
        findings: section("FINDINGS"),
        impression: section("IMPRESSION"),
        mesh,
    }
}

/// One element found by [`elements`].
struct Element<'a> {
    /// The opening tag without `<` and `>`, e.g. `AbstractText Label="X"`.
    open_tag: &'a str,
    /// The raw text between the tags; `None` for `<tag/>` or an unclosed tag.
    content: Option<&'a str>,
}

/// The (non-nested) elements called `name` in `xml`, in order. Tolerant: a
/// truncated element ends the scan.
fn elements<'a>(xml: &'a str, name: &'a str) -> impl Iterator<Item = Element<'a>> + 'a {
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            let start = pos + xml.get(pos..)?.find('<')?;
            let after_name = start + 1 + name.len();
            let is_match = xml.get(start + 1..after_name).is_some_and(|n| n == name)
                && xml[after_name..]
                    .chars()
                    .next()
                    .is_some_and(|c| c == '>' || c == '/' || c.is_whitespace());
            if !is_match {
                pos = start + 1;
                continue;
            }
            let tag_end = after_name + xml[after_name..].find('>')?;
            let open_tag = &xml[start + 1..tag_end];
            if let Some(open_tag) = open_tag.strip_suffix('/') {
                pos = tag_end + 1;
                return Some(Element {
                    open_tag,
                    content: None,
                });
            }
            let body = tag_end + 1;
            let close = format!("</{name}");
            let Some(len) = xml[body..].find(&close) else {
                pos = xml.len();
                return Some(Element {
                    open_tag,
                    content: None,
                });
            };
            let content_end = body + len;
            pos = content_end + close.len();
            return Some(Element {
                open_tag,
                content: Some(&xml[body..content_end]),
            });
        }
    })
}

/// The value of attribute `name` in an opening tag (single or double
/// quotes, spaces around `=` allowed).
fn attribute<'a>(open_tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = open_tag[from..].find(name) {
        let start = from + i;
        from = start + name.len();
        let preceded_by_space = open_tag[..start]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        let rest = open_tag[from..].trim_start();
        let Some(rest) = rest.strip_prefix('=').filter(|_| preceded_by_space) else {
            continue;
        };
        let rest = rest.trim_start();
        let quote = rest.chars().next().filter(|&c| c == '"' || c == '\'')?;
        let value = &rest[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

/// Decode the XML entities `&amp; &lt; &gt; &quot; &apos;` and numeric
/// character references (one level: `&amp;gt;` becomes `&gt;`). Anything
/// else is kept as written.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 12).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let code = if let Some(hex) = entity
                        .strip_prefix("#x")
                        .or_else(|| entity.strip_prefix("#X"))
                    {
                        u32::from_str_radix(hex, 16).ok()
                    } else {
                        entity.strip_prefix('#').and_then(|d| d.parse().ok())
                    };
                    code.and_then(char::from_u32)
                }
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What [`write_splits`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SplitSummary {
    /// Reports given.
    pub total: usize,
    /// Reports dropped because their FINDINGS section is empty or absent.
    pub dropped_no_findings: usize,
    /// Rows in `train.csv`.
    pub train: usize,
    /// Rows in `val.csv`.
    pub val: usize,
    /// Rows in `test.csv`.
    pub test: usize,
    /// Kept reports labelled `normal`.
    pub normal: usize,
    /// Kept reports labelled `abnormal`.
    pub abnormal: usize,
}

/// Default fraction of each label that goes to `val.csv`.
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;
/// Default fraction of each label that goes to `test.csv`.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

/// Label the reports ([`Report::label`]), drop those without FINDINGS, and
/// split the rest into `train.csv`, `val.csv` and `test.csv` under `out`
/// (created if needed), stratified by label: of each label, `test_fraction`
/// (rounded) goes to test, `val_fraction` to val, the rest to train. The
/// split depends only on the reports' ids and `seed` (a self-contained
/// splitmix64 shuffle), not on the input order. Rows in each file are in id
/// order; columns are [`CSV_COLUMNS`], MeSH terms joined with `;`. Each file
/// is written to a temporary name and renamed into place.
pub fn write_splits(
    reports: &[Report],
    out: &Path,
    seed: u64,
    val_fraction: f64,
    test_fraction: f64,
) -> Result<SplitSummary> {
    let fraction_ok = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
    ensure!(
        fraction_ok(val_fraction)
            && fraction_ok(test_fraction)
            && val_fraction + test_fraction < 1.0,
        "split fractions must be in [0, 1) with val + test < 1; got val {val_fraction}, test {test_fraction}"
    );
    let mut seen = HashSet::new();
    for r in reports {
        if !seen.insert(r.id.as_str()) {
            bail!("report id {} appears twice", r.id);
        }
    }

    let mut kept: Vec<&Report> = reports
        .iter()
        .filter(|r| !r.findings.trim().is_empty())
        .collect();
    kept.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut summary = SplitSummary {
        total: reports.len(),
        dropped_no_findings: reports.len() - kept.len(),
        train: 0,
        val: 0,
        test: 0,
        normal: 0,
        abnormal: 0,
    };

    let mut rng = SplitMix64::new(seed);
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for label in [NORMAL, ABNORMAL] {
        let mut group: Vec<&Report> = kept
            .iter()
            .copied()
            .filter(|r| r.label() == label)
            .collect();
        if label == NORMAL {
            summary.normal = group.len();
        } else {
            summary.abnormal = group.len();
        }
        rng.shuffle(&mut group);
        let n = group.len();
        let n_test = share(n, test_fraction);
        let n_val = share(n, val_fraction).min(n - n_test);
        test.extend_from_slice(&group[..n_test]);
        val.extend_from_slice(&group[n_test..n_test + n_val]);
        train.extend_from_slice(&group[n_test + n_val..]);
    }

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, rows) in [
        ("train.csv", &mut train),
        ("val.csv", &mut val),
        ("test.csv", &mut test),
    ] {
        rows.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        write_csv_atomically(&out.join(name), rows)?;
    }
    summary.train = train.len();
    summary.val = val.len();
    summary.test = test.len();
    Ok(summary)
}

/// `round(n * fraction)`, at most `n`.
fn share(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).round() as usize).min(n)
}

impl Report {
    /// The whole report as one text (a language model's document):
    /// `FINDINGS: ...` and `IMPRESSION: ...` on two lines.
    pub fn report_text(&self) -> String {
        format!(
            "FINDINGS: {}\nIMPRESSION: {}",
            self.findings, self.impression
        )
    }
}

fn write_csv_atomically(path: &Path, rows: &[&Report]) -> Result<()> {
    crate::fsutil::write_atomic(path, |w| {
        let mut writer = csv::Writer::from_writer(w);
        writer.write_record(CSV_COLUMNS)?;
        for r in rows {
            writer.write_record([
                r.id.as_str(),
                r.findings.as_str(),
                r.impression.as_str(),
                r.mesh.join(";").as_str(),
                r.label(),
                r.report_text().as_str(),
            ])?;
        }
        writer.flush()?;
        Ok(())
    })
}

/// splitmix64 (Steele, Lea & Flood 2014): small, fast, and fixed here so
/// that splits never change with a dependency's version.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Fisher–Yates.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <uId id="CXR42"/>
   <IUXRId id="42"/>
   <MedlineCitation Owner="Indiana University">
      <Article PubModel="Electronic">
         <Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="INDICATION"/>
            <AbstractText Label="FINDINGS">Heart size normal. Nodules concerning for&lt;BR&gt;metastasis &amp;gt;] &quot;x&quot; &apos;y&apos; &#65;&#x42; &nbsp;</AbstractText>
            <AbstractText Label="IMPRESSION">
               No acute disease.
            </AbstractText>
         </Abstract>
      </Article>
   </MedlineCitation>
   <MeSH>
      <major>Opacity/lung/upper lobe/right</major>
      <major>Calcified Granuloma &amp; more</major>
      <automatic>calcified granuloma</automatic>
   </MeSH>
   <parentImage id="CXR42_1_IM-0001-3001">
      <caption>Xray Chest PA and Lateral &gt;]. </caption>
   </parentImage>
</eCitation>"#;

    fn report(id: u32, findings: &str, mesh: &[&str]) -> Report {
        Report {
            id: id.to_string(),
            findings: findings.to_owned(),
            impression: format!("impression {id}"),
            mesh: mesh.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn parses_sections_mesh_and_entities() {
        let r = parse_report(SAMPLE, "fallback");
        assert_eq!(r.id, "42");
        assert_eq!(
            r.findings,
            "Heart size normal. Nodules concerning for<BR>metastasis &gt;] \"x\" 'y' AB &nbsp;"
        );
        assert_eq!(r.impression, "No acute disease.");
        assert_eq!(
            r.mesh,
            [
                "Opacity/lung/upper lobe/right",
                "Calcified Granuloma & more"
            ]
        );
        assert_eq!(r.label(), ABNORMAL);
    }

    #[test]
    fn tolerates_missing_and_empty_parts() {
        let xml = r#"<eCitation><AbstractText Label='FINDINGS'/>
            <AbstractText  Label = "impression" >Clear.</AbstractText>
            <MeSH><major>Normal</major></MeSH></eCitation>"#;
        let r = parse_report(xml, "7");
        assert_eq!(r.id, "7");
        assert_eq!(r.findings, "");
        assert_eq!(r.impression, "Clear.");
        assert_eq!(r.mesh, ["Normal"]);
        assert!(r.is_normal());

        let r = parse_report("<eCitation><MeSH/><AbstractText Label=\"FINDINGS\">x", "8");
        assert_eq!((r.findings.as_str(), r.mesh.len()), ("", 0));
        assert!(!r.is_normal());
        assert!(!parse_report("", "9").is_normal());
    }

    #[test]
    fn normal_means_exactly_normal() {
        assert!(report(1, "f", &["normal"]).is_normal());
        assert!(report(1, "f", &["NORMAL"]).is_normal());
        assert!(!report(1, "f", &["normal", "Cardiomegaly"]).is_normal());
        assert!(!report(1, "f", &["Cardiomegaly"]).is_normal());
        assert!(!report(1, "f", &[]).is_normal());
    }

    #[test]
    fn reads_a_directory_in_numeric_order() {
        let dir = tempfile::tempdir().unwrap();
        for id in [10, 2, 1] {
            std::fs::write(
                dir.path().join(format!("{id}.xml")),
                SAMPLE.replace("\"42\"", &format!("\"{id}\"")),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join(".headstart-complete"), "sha").unwrap();
        let reports = read_reports(dir.path()).unwrap();
        let ids: Vec<&str> = reports.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "10"]);
        assert!(read_reports(&dir.path().join("missing")).is_err());
    }

    fn corpus() -> Vec<Report> {
        (1..=1000)
            .map(|i: u32| {
                let findings = if i.is_multiple_of(10) { "" } else { "findings" };
                let mesh: &[&str] = if i.is_multiple_of(3) {
                    &["normal"]
                } else {
                    &["Cardiomegaly/mild"]
                };
                report(i, findings, mesh)
            })
            .collect()
    }

    fn read_split(path: &Path) -> Vec<csv::StringRecord> {
        let mut reader = csv::Reader::from_path(path).unwrap();
        assert_eq!(
            reader.headers().unwrap().iter().collect::<Vec<_>>(),
            CSV_COLUMNS
        );
        reader.records().map(Result::unwrap).collect()
    }

    fn ids_of(dir: &Path, name: &str) -> Vec<String> {
        read_split(&dir.join(name))
            .iter()
            .map(|r| r[0].to_owned())
            .collect()
    }

    #[test]
    fn split_is_stratified_and_disjoint() {
        let reports = corpus();
        let dir = tempfile::tempdir().unwrap();
        let s = write_splits(&reports, dir.path(), 7, 0.1, 0.2).unwrap();
        // 100 without findings; of the 900 kept, multiples of 3 → 300 normal.
        assert_eq!(
            s,
            SplitSummary {
                total: 1000,
                dropped_no_findings: 100,
                train: 630,
                val: 90,
                test: 180,
                normal: 300,
                abnormal: 600,
            }
        );
        let mut all = HashSet::new();
        for (name, expected, normal) in [
            ("train.csv", 630, 210),
            ("val.csv", 90, 30),
            ("test.csv", 180, 60),
        ] {
            let rows = read_split(&dir.path().join(name));
            assert_eq!(rows.len(), expected, "{name}");
            let normals = rows.iter().filter(|r| &r[4] == NORMAL).count();
            assert_eq!(normals, normal, "{name} keeps the label proportions");
            for r in &rows {
                assert!(all.insert(r[0].to_owned()), "id {} in two splits", &r[0]);
                assert!(!r[1].is_empty());
                let id: u32 = r[0].parse().unwrap();
                let mesh = if id.is_multiple_of(3) {
                    "normal"
                } else {
                    "Cardiomegaly/mild"
                };
                assert_eq!(&r[3], mesh);
                assert_eq!(&r[2], format!("impression {id}"));
            }
            let ids: Vec<u32> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "{name} is in id order");
        }
        assert_eq!(all.len(), 900);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn split_depends_on_seed_not_input_order() {
        let reports = corpus();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        write_splits(&reports, a.path(), 7, 0.1, 0.2).unwrap();
        let mut reversed = reports.clone();
        reversed.reverse();
        write_splits(&reversed, b.path(), 7, 0.1, 0.2).unwrap();
        write_splits(&reports, c.path(), 8, 0.1, 0.2).unwrap();
        for name in ["train.csv", "val.csv", "test.csv"] {
            assert_eq!(
                std::fs::read(a.path().join(name)).unwrap(),
                std::fs::read(b.path().join(name)).unwrap(),
                "{name}: same seed, same split"
            );
        }
        assert_ne!(
            ids_of(a.path(), "test.csv"),
            ids_of(c.path(), "test.csv"),
            "another seed, another split"
        );
        // Rewriting over existing files works (rename replaces them).
        let again = write_splits(&reports, a.path(), 8, 0.1, 0.2).unwrap();
        assert_eq!(again.test, 180);
        assert_eq!(ids_of(a.path(), "test.csv"), ids_of(c.path(), "test.csv"));
    }

    #[test]
    fn split_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let reports = corpus();
        for (val, test) in [(0.5, 0.5), (-0.1, 0.2), (0.1, f64::NAN), (1.0, 0.0)] {
            assert!(write_splits(&reports, dir.path(), 1, val, test).is_err());
        }
        let dup = vec![report(1, "a", &[]), report(1, "b", &[])];
        assert!(write_splits(&dup, dir.path(), 1, 0.1, 0.2).is_err());
        // Tiny groups and zero fractions are fine.
        let s = write_splits(&reports[..3], dir.path(), 1, 0.0, 0.0).unwrap();
        assert_eq!((s.train, s.val, s.test), (3, 0, 0));
    }

    #[test]
    fn splitmix64_is_fixed() {
        // Reference values of splitmix64 seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let mut rng = SplitMix64::new(1);
        let mut v: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
