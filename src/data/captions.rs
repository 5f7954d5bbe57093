//! Captioned images: a CSV/TSV/JSONL table with an image-path column and a
//! caption column, one row per (image, caption), the layout a user with
//! x-rays and their reports has. Several rows may name the same image: all
//! its captions are kept (for training each is an example; for scoring
//! they are the image's references). Relative paths resolve against the
//! table's folder.
//!
//! Bad rows (an empty caption or image path, an image file that does not
//! exist) are errors naming the file, the line and the column, or with
//! `skip_bad_rows` are skipped and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::table::{self, Columns};

/// One image and every caption the table gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionedImage {
    pub path: PathBuf,
    pub captions: Vec<String>,
    /// The line of its first row, for messages.
    pub line: usize,
}

/// What [`read`] found.
#[derive(Clone, Debug)]
pub struct CaptionSet {
    /// In the order of their first rows.
    pub images: Vec<CaptionedImage>,
    /// Rows kept (captions in all).
    pub rows: usize,
    /// Rows skipped as bad (with `skip_bad_rows`).
    pub skipped: usize,
}

/// Reads the table at `path`.
pub fn read(
    path: &Path,
    image_column: &str,
    caption_column: &str,
    skip_bad_rows: bool,
) -> Result<CaptionSet> {
    if path.is_dir() {
        bail!(
            "{} is a folder; captioning data is a table (.csv, .tsv or .jsonl) with an image \
             column ({image_column:?}) and a caption column ({caption_column:?}), one row per caption",
            path.display()
        );
    }
    let cols = Columns {
        text: image_column,
        label: Some(caption_column),
        skip_bad_rows,
    };
    let outcome = table::read_examples(path, &cols)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut skipped = outcome.skipped;
    let mut images: Vec<CaptionedImage> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    let mut rows = 0;
    for e in outcome.examples {
        let p = PathBuf::from(e.text.trim());
        let resolved = if p.is_absolute() { p } else { base.join(&p) };
        if !resolved.is_file() {
            let msg = format!(
                "{} line {}: image {:?} (column {image_column:?}) not found at {}",
                path.display(),
                e.line,
                e.text.trim(),
                resolved.display()
            );
            if !skip_bad_rows {
                bail!("{msg} (fix the path, or pass --skip-bad-rows to skip and count such rows)");
            }
            skipped += 1;
            continue;
        }
        rows += 1;
        match index.get(&resolved) {
            Some(&i) => images[i].captions.push(e.label),
            None => {
                index.insert(resolved.clone(), images.len());
                images.push(CaptionedImage {
                    path: resolved,
                    captions: vec![e.label],
                    line: e.line,
                });
            }
        }
    }
    if images.is_empty() {
        bail!(
            "{}: no captioned images{}",
            path.display(),
            if skipped > 0 {
                format!(" ({skipped} bad rows skipped)")
            } else {
                String::new()
            }
        );
    }
    Ok(CaptionSet {
        images,
        rows,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        for name in ["a.png", "b.png"] {
            image::GrayImage::new(4, 4)
                .save(dir.path().join("img").join(name))
                .unwrap();
        }
        dir
    }

    #[test]
    fn rows_of_one_image_become_its_references() {
        let dir = setup();
        let csv = dir.path().join("captions.csv");
        std::fs::write(
            &csv,
            "image,caption\nimg/a.png,A bag.\nimg/b.png,\"A coat, left.\"\nimg/a.png,One bag.\n",
        )
        .unwrap();
        let set = read(&csv, "image", "caption", false).unwrap();
        assert_eq!((set.images.len(), set.rows, set.skipped), (2, 3, 0));
        assert_eq!(set.images[0].path, dir.path().join("img/a.png"));
        assert_eq!(set.images[0].captions, vec!["A bag.", "One bag."]);
        assert_eq!(set.images[1].captions, vec!["A coat, left."]);
        assert_eq!(set.images[1].line, 3);
    }

    #[test]
    fn bad_rows_name_the_line_and_column_or_are_skipped() {
        let dir = setup();
        let csv = dir.path().join("c.csv");
        std::fs::write(
            &csv,
            "image,caption\nimg/a.png,A bag.\nimg/missing.png,A shoe.\n",
        )
        .unwrap();
        let err = format!("{:#}", read(&csv, "image", "caption", false).unwrap_err());
        assert!(
            err.contains("c.csv line 3: image \"img/missing.png\""),
            "{err}"
        );
        assert!(err.contains("not found"), "{err}");
        let jsonl = dir.path().join("c.jsonl");
        std::fs::write(&jsonl, "{\"image\": \"img/b.png\", \"caption\": \" \"}\n").unwrap();
        let err = format!("{:#}", read(&jsonl, "image", "caption", false).unwrap_err());
        assert!(
            err.contains("c.jsonl line 1: empty or missing label (column \"caption\")"),
            "{err}"
        );
        std::fs::write(
            &csv,
            "image,caption\nimg/a.png,A bag.\nimg/missing.png,A shoe.\nimg/b.png,\n",
        )
        .unwrap();
        let set = read(&csv, "image", "caption", true).unwrap();
        assert_eq!((set.images.len(), set.rows, set.skipped), (1, 1, 2));
        let err = format!("{:#}", read(&jsonl, "image", "caption", true).unwrap_err());
        assert!(
            err.contains("no captioned images (1 bad rows skipped)"),
            "{err}"
        );
    }

    #[test]
    fn a_folder_is_not_a_caption_table() {
        let dir = setup();
        let err = read(dir.path(), "image", "caption", false).unwrap_err();
        assert!(err.to_string().contains("is a folder"), "{err}");
    }
}
