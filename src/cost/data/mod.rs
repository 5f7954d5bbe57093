//! The tables the cost estimates rest on, shipped as CSV files next to this
//! module and compiled into the binary with `include_str!`:
//!
//! * `cpu_tdp.csv`, `gpu_tdp.csv` — thermal design power by model
//!   ([`super::energy`]);
//! * `country_intensity.csv`, `cloud_regions.csv` — grid carbon intensity
//!   by country and cloud region ([`super::carbon`]).
//!
//! Each file opens with `#` comment lines that name its source and its
//! columns, then a header row. The tables are parsed once, on first use;
//! the unit tests parse every shipped file, so a malformed row fails the
//! test suite rather than a run.

use serde::de::DeserializeOwned;

pub(crate) const CPU_TDP_CSV: &str = include_str!("cpu_tdp.csv");
pub(crate) const GPU_TDP_CSV: &str = include_str!("gpu_tdp.csv");
pub(crate) const COUNTRY_INTENSITY_CSV: &str = include_str!("country_intensity.csv");
pub(crate) const CLOUD_REGIONS_CSV: &str = include_str!("cloud_regions.csv");

/// Parses `text` (the contents of `file`, for messages) as CSV rows of `T`:
/// `#` lines are comments, the first other line is the header, blanks
/// around fields are trimmed. Every row must deserialize and pass `check`,
/// and there must be at least one; the error names the file and line.
pub(crate) fn parse_csv<T: DeserializeOwned>(
    file: &str,
    text: &str,
    check: impl Fn(&T) -> Result<(), String>,
) -> Result<Vec<T>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(format!("{file}: {e}")),
        }
        let line = record.position().map_or(0, |p| p.line());
        let headers = reader.headers().map_err(|e| format!("{file}: {e}"))?;
        let row: T = record
            .deserialize(Some(headers))
            .map_err(|e| format!("{file} line {line}: {e}"))?;
        check(&row).map_err(|e| format!("{file} line {line}: {e}"))?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(format!("{file}: no rows"));
    }
    Ok(rows)
}

/// `Err` unless `x` is finite and above 0.
pub(crate) fn positive(what: &str, x: f64) -> Result<(), String> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(format!("{what} {x} is not a positive number"))
    }
}

/// `Err` if `text` is empty.
pub(crate) fn non_empty(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(())
    }
}

/// `Err` naming the first value that `key` gives twice.
pub(crate) fn unique<T>(file: &str, rows: &[T], key: impl Fn(&T) -> String) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        let k = key(row);
        if !seen.insert(k.clone()) {
            return Err(format!("{file}: {k:?} appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Row {
        key: String,
        watts: f64,
    }

    fn check(r: &Row) -> Result<(), String> {
        non_empty("key", &r.key)?;
        positive("watts", r.watts)
    }

    #[test]
    fn comments_header_and_rows() {
        let text = "# source: somewhere\n#\nkey,watts\na, 1.5\n# a note\nb,2\n";
        let rows = parse_csv::<Row>("t.csv", text, check).unwrap();
        assert_eq!(
            rows,
            [
                Row {
                    key: "a".into(),
                    watts: 1.5
                },
                Row {
                    key: "b".into(),
                    watts: 2.0
                }
            ]
        );
    }

    #[test]
    fn malformed_rows_are_errors_that_name_the_line() {
        let bad_number = "# c\nkey,watts\na,1\nb,lots\n";
        let err = parse_csv::<Row>("t.csv", bad_number, check).unwrap_err();
        assert!(err.starts_with("t.csv line 4: "), "{err}");
        let missing_field = "key,watts\na,1\nb\n";
        let err = parse_csv::<Row>("t.csv", missing_field, check).unwrap_err();
        assert!(err.starts_with("t.csv: "), "{err}");
        assert!(err.contains("line: 3"), "{err}");
        let negative = "key,watts\na,-3\n";
        let err = parse_csv::<Row>("t.csv", negative, check).unwrap_err();
        assert_eq!(err, "t.csv line 2: watts -3 is not a positive number");
        let empty_key = "key,watts\n,3\n";
        let err = parse_csv::<Row>("t.csv", empty_key, check).unwrap_err();
        assert_eq!(err, "t.csv line 2: key is empty");
        let no_rows = "# only a comment\nkey,watts\n";
        assert_eq!(
            parse_csv::<Row>("t.csv", no_rows, check).unwrap_err(),
            "t.csv: no rows"
        );
    }

    #[test]
    fn duplicates_are_named() {
        let rows = parse_csv::<Row>("t.csv", "key,watts\na,1\nb,2\na,3\n", check).unwrap();
        assert_eq!(
            unique("t.csv", &rows, |r| r.key.clone()).unwrap_err(),
            "t.csv: \"a\" appears twice"
        );
        assert!(unique("t.csv", &rows[..2], |r| r.key.clone()).is_ok());
    }
}
