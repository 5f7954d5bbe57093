//! `eval` and `predict` for a trained captioner (a captioning run or its
//! exported `model/`): scores on a caption table, or JSON lines
//! `{"image", "caption"}`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::Device;

use headstart::tasks::captioning::Decoding;
use headstart::train::eval_caption::{Captioner, load_captioner};

/// Decoding flags `eval` and `predict` take for a captioner (default: the
/// run's).
#[derive(Clone, Debug, clap::Args)]
pub struct DecodeArgs {
    /// Captioners: beams of beam search (1: greedy).
    #[arg(long)]
    pub beams: Option<usize>,
    /// Captioners, beam search: finished captions rank by score / length^F.
    #[arg(long)]
    pub length_penalty: Option<f64>,
    /// Captioners, beam search: no n-gram of this size occurs twice.
    #[arg(long)]
    pub no_repeat_ngram: Option<usize>,
    /// Captioners: longest caption generated, in tokens.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
}

impl DecodeArgs {
    /// The captioner at `model`, decoding as these flags say.
    fn load(&self, model: &Path, device: &Device) -> Result<Captioner> {
        load_captioner(model, self.decoding(model)?, self.max_new_tokens, device)
    }

    fn decoding(&self, model: &Path) -> Result<Option<Decoding>> {
        if self.beams.is_none() && self.length_penalty.is_none() && self.no_repeat_ngram.is_none() {
            return Ok(None);
        }
        let config = headstart::train::eval::exported_model(model).join("config.json");
        let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config)?)?;
        let mut d: Decoding = serde_json::from_value(raw["captioning"]["decoding"].clone())?;
        if let Some(b) = self.beams {
            d.beams = b;
        }
        if let Some(l) = self.length_penalty {
            d.length_penalty = l;
        }
        if let Some(n) = self.no_repeat_ngram {
            d.no_repeat_ngram = n;
        }
        Ok(Some(d))
    }
}

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
    decode: &DecodeArgs,
    device: &Device,
) -> Result<()> {
    let captioner = decode.load(model, device)?;
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
    decode: &DecodeArgs,
    device: &Device,
) -> Result<()> {
    let captioner = decode.load(model, device)?;
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
