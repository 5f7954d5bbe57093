//! `eval` and `predict` for a trained captioner (a captioning run or its
//! exported `model/`): scores on a caption table, or JSON lines
//! `{"image", "caption"}`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::Device;

use headstart::train::eval_caption::{DecodingOverride, load_captioner};

/// Scores the captioner at `model` on the caption table `data`.
#[allow(clippy::too_many_arguments)]
pub fn eval(
    model: &Path,
    data: &Path,
    image_column: &str,
    caption_column: &str,
    skip_bad_rows: bool,
    batch_size: usize,
    json: bool,
    cost: &headstart::cost::run::CostOptions,
    decode: &DecodingOverride,
    device: &Device,
) -> Result<()> {
    let captioner = load_captioner(model, decode, device)?;
    let set = headstart::data::captions::read(data, image_column, caption_column, skip_bad_rows)?;
    let (m, c, bad) =
        captioner.evaluate(&set, &data.display().to_string(), batch_size, device, cost)?;
    let skipped = set.skipped + bad;
    if json {
        let mut v = serde_json::to_value(&m)?;
        v["skipped_rows"] = skipped.into();
        v["cost"] = serde_json::to_value(&c)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "captioner on {} images ({} captions) of {}",
            m.images,
            set.rows,
            data.display()
        );
        println!(
            "BLEU-1 {:.4}  BLEU-2 {:.4}  BLEU-3 {:.4}  BLEU-4 {:.4}",
            m.bleu[0], m.bleu[1], m.bleu[2], m.bleu[3]
        );
        println!("ROUGE-L {:.4}  CIDEr-D {:.4}", m.rouge_l, m.cider_d);
        if let Some(a) = m.label_accuracy {
            println!("label accuracy {a:.4} (captions naming exactly the items of their image)");
        }
        println!("caption loss {:.4} nats per token", m.loss);
        for (image, caption) in &m.samples {
            println!("  {image}: {caption}");
        }
        if skipped > 0 {
            println!("{skipped} bad rows or images skipped");
        }
    }
    for line in c.summary_lines() {
        eprintln!("{line}");
    }
    Ok(())
}

/// Captions for `images` (and those of `file`: a folder or a table with
/// an `image` column), as JSON lines.
pub fn predict(
    model: &Path,
    file: Option<PathBuf>,
    images: Vec<String>,
    batch_size: usize,
    decode: &DecodingOverride,
    device: &Device,
) -> Result<()> {
    let captioner = load_captioner(model, decode, device)?;
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(f) = &file {
        if f.is_dir() {
            let list = headstart::data::image_list::read_folder(f)?;
            files.extend(list.into_iter().map(|e| PathBuf::from(e.text)));
        } else {
            // a caption table: its images, once each
            let set = headstart::data::captions::read(f, "image", "caption", false)?;
            files.extend(set.images.into_iter().map(|i| i.path));
        }
    }
    files.extend(images.into_iter().map(PathBuf::from));
    if files.is_empty() {
        bail!("nothing to caption: give image paths as arguments or --file FOLDER|LIST");
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (image, caption) in captioner.predict(&files, batch_size, device)? {
        writeln!(
            out,
            "{}",
            serde_json::json!({"image": image, "caption": caption})
        )?;
    }
    Ok(())
}
