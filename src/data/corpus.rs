//! Text corpora for language modelling: documents from a plain-text file
//! (split at blank lines), a folder of text files (one document per file,
//! recursively, in path order), or the text column of a CSV/TSV/JSONL table
//! (one document per row).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::table::{self, Columns, Example};

/// File extensions read as plain text.
pub const TEXT_EXTENSIONS: &[&str] = &["txt", "text", "md", "rst"];

/// The documents at `path` as examples (text only, no label), and the
/// table rows skipped (`skip_bad_rows`).
pub fn read_documents(
    path: &Path,
    text_column: &str,
    skip_bad_rows: bool,
) -> Result<(Vec<Example>, usize)> {
    // `line`: the document's number (1-based), for messages
    let doc = |(i, text): (usize, String)| Example {
        text,
        label: String::new(),
        line: i + 1,
    };
    let (docs, skipped) = if path.is_dir() {
        let mut files = Vec::new();
        text_files(path, &mut files)?;
        if files.is_empty() {
            bail!(
                "{}: no text files (.{}) in this folder",
                path.display(),
                TEXT_EXTENSIONS.join(", .")
            );
        }
        files.sort();
        let mut docs = Vec::new();
        for (i, f) in files.iter().enumerate() {
            docs.push(doc((i, read_text(f)?)));
        }
        (docs, 0)
    } else {
        let ext = extension(path);
        if TEXT_EXTENSIONS.contains(&ext.as_str()) || ext.is_empty() {
            let text = read_text(path)?;
            (
                paragraphs(&text).into_iter().enumerate().map(doc).collect(),
                0,
            )
        } else {
            let cols = Columns {
                text: text_column,
                label: None,
                skip_bad_rows,
            };
            let t = table::read_examples(path, &cols)?;
            (t.examples, t.skipped)
        }
    };
    let docs: Vec<Example> = docs
        .into_iter()
        .filter(|d| !d.text.trim().is_empty())
        .collect();
    if docs.is_empty() {
        bail!(
            "{}: the corpus is empty (no document with any text)",
            path.display()
        );
    }
    Ok((docs, skipped))
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {}); convert it to UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn text_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries {
        let p = e?.path();
        if p.is_dir() {
            text_files(&p, out)?;
        } else if TEXT_EXTENSIONS.contains(&extension(&p).as_str()) {
            out.push(p);
        }
    }
    Ok(())
}

/// Paragraphs of a text: runs of lines separated by blank lines, each kept
/// with its inner line breaks.
pub fn paragraphs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current.join("\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_file_splits_at_blank_lines() {
        assert_eq!(
            paragraphs("a b\nc\n\n\n  \nd\r\ne\n\nf"),
            vec!["a b\nc", "d\ne", "f"]
        );
    }

    #[test]
    fn folders_tables_and_files_give_documents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("b.txt"), "second").unwrap();
        std::fs::write(root.join("sub/a.md"), "third\n\nstill third").unwrap();
        std::fs::write(root.join("a.txt"), "first").unwrap();
        std::fs::write(root.join("skip.bin"), [0u8, 159, 146]).unwrap();
        let (docs, _) = read_documents(&root, "text", false).unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(texts, vec!["first", "second", "third\n\nstill third"]);

        let jsonl = dir.path().join("c.jsonl");
        std::fs::write(&jsonl, "{\"body\": \"x y\"}\n{\"body\": \"z\"}\n").unwrap();
        let (docs, _) = read_documents(&jsonl, "body", false).unwrap();
        assert_eq!(docs.len(), 2);
        let e = read_documents(&jsonl, "text", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.jsonl") && e.contains("text"), "{e}");
    }

    #[test]
    fn empty_and_non_utf8_corpora_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n \n\n").unwrap();
        let e = read_documents(&empty, "text", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.txt") && e.contains("empty"), "{e}");
        let bad = dir.path().join("latin1.txt");
        std::fs::write(&bad, [b'c', b'a', b'f', 0xe9]).unwrap();
        let e = read_documents(&bad, "text", false).unwrap_err().to_string();
        assert!(e.contains("latin1.txt") && e.contains("UTF-8"), "{e}");
        let none = dir.path().join("folder");
        std::fs::create_dir_all(&none).unwrap();
        let e = read_documents(&none, "text", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no text files"), "{e}");
    }
}
