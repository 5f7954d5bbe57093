//! Labelled texts from CSV or JSON Lines files.
//!
//! The format follows the extension (`.csv`, `.tsv`, `.jsonl`/`.ndjson`).
//! A bad row (missing column, empty text, empty label, unparsable line, and in
//! a CSV file a row whose field count differs from the header's, as an
//! unquoted comma makes it) is an error naming the file and line, unless the
//! caller asks to skip bad rows, in which case each skipped row is counted and
//! the first few are described.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub text: String,
    /// The label as written in the file (integers are kept as their decimal text).
    pub label: String,
    /// 1-based line number in the file, for messages.
    pub line: usize,
}

/// What reading a file found.
#[derive(Clone, Debug, Default)]
pub struct ReadOutcome {
    pub examples: Vec<Example>,
    pub skipped: usize,
    /// Up to five descriptions of skipped rows.
    pub skipped_samples: Vec<String>,
}

/// Column names and the bad-row policy.
#[derive(Clone, Debug)]
pub struct Columns<'a> {
    pub text: &'a str,
    /// None for unlabelled input (prediction).
    pub label: Option<&'a str>,
    pub skip_bad_rows: bool,
}

pub fn read_examples(path: &Path, cols: &Columns) -> Result<ReadOutcome> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "csv" => read_delimited(path, cols, b',', true),
        "tsv" => read_delimited(path, cols, b'\t', false),
        "jsonl" | "ndjson" | "json" => read_jsonl(path, cols),
        _ => bail!(
            "{}: unknown data format `.{ext}`; use .csv, .tsv or .jsonl",
            path.display()
        ),
    }
}

struct Collector<'a> {
    path: &'a Path,
    cols: &'a Columns<'a>,
    skip: bool,
    out: ReadOutcome,
}

impl Collector<'_> {
    fn bad(&mut self, line: usize, why: String) -> Result<()> {
        let msg = format!("{} line {line}: {why}", self.path.display());
        if !self.skip {
            bail!("{msg} (fix the row, or pass --skip-bad-rows to skip and count such rows)");
        }
        self.out.skipped += 1;
        if self.out.skipped_samples.len() < 5 {
            self.out.skipped_samples.push(msg);
        }
        Ok(())
    }

    fn push(
        &mut self,
        line: usize,
        text: Option<String>,
        label: Option<Option<String>>,
    ) -> Result<()> {
        let text = match text {
            Some(t) if !t.trim().is_empty() => t,
            Some(_) => {
                return self.bad(line, format!("empty text (column {:?})", self.cols.text));
            }
            None => return self.bad(line, format!("no text column {:?}", self.cols.text)),
        };
        let label = match label {
            None => String::new(),
            Some(Some(l)) if !l.trim().is_empty() => l.trim().to_string(),
            Some(_) => {
                let col = self.cols.label.unwrap_or("label");
                return self.bad(line, format!("empty or missing label (column {col:?})"));
            }
        };
        self.out.examples.push(Example { text, label, line });
        Ok(())
    }
}

/// With `same_width`, a row with more or fewer fields than the header is a bad
/// row: in a CSV file that is almost always a comma inside an unquoted text,
/// which would shift the label column and invent a class.
fn read_delimited(
    path: &Path,
    cols: &Columns,
    delimiter: u8,
    same_width: bool,
) -> Result<ReadOutcome> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .clone();
    let find = |name: &str| -> Result<usize> {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .with_context(|| {
                format!(
                    "{}: no column `{name}` in the header (columns: {}); choose one with \
                 --text-column / --label-column",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(", ")
                )
            })
    };
    let text_idx = find(cols.text)?;
    let label_idx = cols.label.map(find).transpose()?;
    let mut c = Collector {
        path,
        cols,
        skip: cols.skip_bad_rows,
        out: ReadOutcome::default(),
    };
    for record in reader.records() {
        match record {
            Ok(r) => {
                let line = r.position().map(|p| p.line() as usize).unwrap_or(0);
                if same_width && r.len() != headers.len() {
                    c.bad(
                        line,
                        format!(
                            "{} fields, but the header has {}: a field that contains a comma \
                             must be quoted (\"like, this\"), or the columns shift",
                            r.len(),
                            headers.len()
                        ),
                    )?;
                    continue;
                }
                let text = r.get(text_idx).map(str::to_string);
                let label = label_idx.map(|i| r.get(i).map(str::to_string));
                c.push(line, text, label)?;
            }
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                c.bad(line, format!("not valid CSV: {e}"))?;
            }
        }
    }
    Ok(c.out)
}

fn read_jsonl(path: &Path, cols: &Columns) -> Result<ReadOutcome> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut c = Collector {
        path,
        cols,
        skip: cols.skip_bad_rows,
        out: ReadOutcome::default(),
    };
    for (i, raw) in content.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = match serde_json::from_str(raw) {
            Ok(v) => v,
            Err(e) => {
                c.bad(line, format!("not valid JSON: {e}"))?;
                continue;
            }
        };
        let field = |name: &str| -> Option<String> {
            match value.get(name)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let text = field(cols.text);
        let label = cols.label.map(field);
        c.push(line, text, label)?;
    }
    Ok(c.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(skip: bool) -> Columns<'static> {
        Columns {
            text: "findings",
            label: Some("label"),
            skip_bad_rows: skip,
        }
    }

    #[test]
    fn csv_with_quotes_and_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(
            &p,
            "id,findings,label\n1,\"Clear, no effusion.\",normal\n2,,abnormal\n3,Opacity,1\n",
        )
        .unwrap();
        let err = read_examples(&p, &cols(false)).unwrap_err().to_string();
        assert!(err.contains("d.csv line 3: empty text"), "{err}");
        let out = read_examples(&p, &cols(true)).unwrap();
        assert_eq!(out.skipped, 1);
        assert_eq!(out.examples.len(), 2);
        assert_eq!(out.examples[0].text, "Clear, no effusion.");
        assert_eq!(out.examples[1].label, "1");
        assert_eq!(out.examples[1].line, 4);
    }

    #[test]
    fn csv_row_with_an_unquoted_comma_is_a_bad_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(
            &p,
            "id,findings,label\n1,Opacity,abnormal\n2,Clear, no effusion,normal\n3,short\n\
             4,\"Clear, no effusion\",normal\n",
        )
        .unwrap();
        let err = read_examples(&p, &cols(false)).unwrap_err().to_string();
        assert!(
            err.contains("d.csv line 3: 4 fields, but the header has 3")
                && err.contains("must be quoted")
                && err.contains("--skip-bad-rows"),
            "{err}"
        );
        let out = read_examples(&p, &cols(true)).unwrap();
        assert_eq!(out.skipped, 2);
        assert!(
            out.skipped_samples[0].contains("line 3: 4 fields")
                && out.skipped_samples[1].contains("line 4: 2 fields"),
            "{:?}",
            out.skipped_samples
        );
        assert_eq!(
            out.examples
                .iter()
                .map(|e| (e.line, e.text.as_str(), e.label.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (2, "Opacity", "abnormal"),
                (5, "Clear, no effusion", "normal")
            ]
        );
    }

    #[test]
    fn tsv_rows_keep_their_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.tsv");
        std::fs::write(
            &p,
            "id\tfindings\tlabel\n1\tClear, no effusion\tnormal\n2\tOpacity\tabnormal\n",
        )
        .unwrap();
        let out = read_examples(&p, &cols(false)).unwrap();
        assert_eq!(out.skipped, 0);
        assert_eq!(
            out.examples
                .iter()
                .map(|e| (e.text.as_str(), e.label.as_str()))
                .collect::<Vec<_>>(),
            vec![("Clear, no effusion", "normal"), ("Opacity", "abnormal")]
        );
    }

    #[test]
    fn missing_column_names_the_columns_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "id,text,label\n1,a,b\n").unwrap();
        let err = read_examples(&p, &cols(false)).unwrap_err().to_string();
        assert!(
            err.contains("no column `findings`") && err.contains("id, text, label"),
            "{err}"
        );
    }

    #[test]
    fn jsonl_with_integer_labels_and_a_broken_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"findings\": \"a\", \"label\": 0}\n\n{broken\n{\"findings\": \"b\", \"label\": 1}\n",
        )
        .unwrap();
        let err = read_examples(&p, &cols(false)).unwrap_err().to_string();
        assert!(err.contains("d.jsonl line 3: not valid JSON"), "{err}");
        let out = read_examples(&p, &cols(true)).unwrap();
        assert_eq!(
            out.examples
                .iter()
                .map(|e| (e.text.as_str(), e.label.as_str()))
                .collect::<Vec<_>>(),
            vec![("a", "0"), ("b", "1")]
        );
        assert_eq!(out.skipped, 1);
    }
}
