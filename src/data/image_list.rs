//! Lists of labelled images: an image folder (one sub-folder per class,
//! torchvision's `ImageFolder` convention) or a CSV/TSV/JSONL table with an
//! image-path column and a label column (relative paths resolve against the
//! table's folder).
//!
//! Examples are [`Example`]s whose `text` is the image's path, so the
//! seeded splits and subsets of text work unchanged.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::table::{self, Columns, Example};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp"];

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// What [`read`] found.
pub struct ImageList {
    pub examples: Vec<Example>,
    /// Rows skipped as bad (tables only, with `skip_bad_rows`).
    pub skipped: usize,
}

/// Reads a folder or a table of labelled images.
pub fn read(
    path: &Path,
    image_column: &str,
    label_column: &str,
    skip_bad_rows: bool,
) -> Result<ImageList> {
    if path.is_dir() {
        return Ok(ImageList {
            examples: read_folder(path)?,
            skipped: 0,
        });
    }
    let cols = Columns {
        text: image_column,
        label: Some(label_column),
        skip_bad_rows,
    };
    let outcome = table::read_examples(path, &cols)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let examples = outcome
        .examples
        .into_iter()
        .map(|mut e| {
            let p = PathBuf::from(e.text.trim());
            e.text = if p.is_absolute() { p } else { base.join(p) }
                .display()
                .to_string();
            e
        })
        .collect();
    Ok(ImageList {
        examples,
        skipped: outcome.skipped,
    })
}

/// One example per image file under `dir/<class>/`, classes and files in
/// name order. An empty class folder is an error naming it.
pub fn read_folder(dir: &Path) -> Result<Vec<Example>> {
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && !hidden(p))
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!(
            "{} has no class folders: an image folder holds one sub-folder per class \
             (e.g. {0}/cat/1.png, {0}/dog/2.jpg), or give a CSV with image and label columns",
            dir.display()
        );
    }
    let mut examples = Vec::new();
    for class in &classes {
        let label = class
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(class)
            .with_context(|| format!("cannot list {}", class.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && !hidden(p) && is_image(p))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!(
                "class folder {} holds no images ({}): remove it or add images",
                class.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        for f in files {
            examples.push(Example {
                text: f.display().to_string(),
                label: label.clone(),
                line: examples.len() + 1,
            });
        }
    }
    Ok(examples)
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_classes_and_tables_resolve_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        for (class, files) in [
            ("cat", vec!["b.png", "a.JPG", "notes.txt"]),
            ("dog", vec!["c.webp"]),
        ] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            for f in files {
                std::fs::write(dir.path().join(class).join(f), b"x").unwrap();
            }
        }
        let ex = read_folder(dir.path()).unwrap();
        let got: Vec<(String, &str)> = ex
            .iter()
            .map(|e| {
                let p = PathBuf::from(&e.text);
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    e.label.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.JPG".to_string(), "cat"),
                ("b.png".to_string(), "cat"),
                ("c.webp".to_string(), "dog")
            ]
        );
        let csv = dir.path().join("list.csv");
        std::fs::write(&csv, "image,label\ncat/a.JPG,cat\n").unwrap();
        let l = read(&csv, "image", "label", false).unwrap();
        assert_eq!(
            l.examples[0].text,
            dir.path().join("cat/a.JPG").display().to_string()
        );
    }

    #[test]
    fn an_empty_class_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        std::fs::create_dir_all(dir.path().join("full")).unwrap();
        std::fs::write(dir.path().join("full/1.png"), b"x").unwrap();
        let err = format!("{:#}", read_folder(dir.path()).unwrap_err());
        assert!(
            err.contains("empty") && err.contains("holds no images"),
            "{err}"
        );
    }
}
