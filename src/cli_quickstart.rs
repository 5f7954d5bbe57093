//! `headstart quickstart`: its flags and the text, image and language-model
//! variants of [`headstart::quickstart`], with the table printed at the end.

use std::path::{Path, PathBuf};

use anyhow::Result;
use headstart::compare::stats::Budget;
use headstart::quickstart::captions::{CaptionQuickstartOptions, run_captions};
use headstart::quickstart::lm::{LmQuickstartOptions, run_lm};
use headstart::quickstart::{
    ImageQuickstartOptions, QuickstartOptions, QuickstartResult, run, run_images,
};

#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Where the report splits, the runs and the report go (default
    /// runs/quickstart, runs/quickstart-images, runs/quickstart-lm or
    /// runs/quickstart-captions).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A small setting of the same job (48 reports, 1 epoch, 96 test reports), for tests and a first look.
    #[arg(long)]
    pub quick: bool,
    /// The image variant: torchvision's ImageNet MobileNetV2 tuned vs trained from scratch
    /// on 1,000 Fashion-MNIST images (64 px, 3 epochs), tested on 1,000 held-out ones.
    #[arg(long, conflicts_with_all = ["lm", "captions"])]
    pub images: bool,
    /// The language-model variant: SmolLM2-135M-Instruct tuned (LoRA, freeze:24, full) vs
    /// trained from scratch on 120 IU reports' text (12 steps), perplexity on 60 held-out ones.
    #[arg(long, conflicts_with = "captions")]
    pub lm: bool,
    /// The captioning variant: MobileNetV2 (frozen) + SmolLM2-135M-Instruct (LoRA) vs both
    /// trained from scratch, on 180 captioned Fashion-MNIST scenes (2 epochs), BLEU-4 and
    /// CIDEr-D on 40 held-out scenes, with sample captions.
    #[arg(long)]
    pub captions: bool,
    /// Seeds per strategy (default 1 for the ten-minute budget).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Training reports (or images) per run.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Budget per run (default 2ep; 3ep for --images; 12steps for --lm; 2ep for --captions).
    #[arg(long)]
    pub budget: Option<Budget>,
}

pub fn run_cli(args: QuickstartArgs, device: burn::tensor::Device) -> Result<()> {
    let QuickstartArgs {
        out,
        quick,
        images,
        lm,
        captions,
        seeds,
        train_limit,
        budget,
    } = args;
    let knobs = Knobs {
        seeds,
        train_limit,
        budget,
    };
    let print = &mut |line: &str| println!("{line}");
    let r = if images {
        let out = out.unwrap_or_else(|| PathBuf::from("runs/quickstart-images"));
        let mut opts = if quick {
            ImageQuickstartOptions::quick(out)
        } else {
            ImageQuickstartOptions::default_job(out)
        };
        knobs.apply(&mut opts.seeds, &mut opts.train_limit, &mut opts.budget);
        run_images(&opts, &device, print)?
    } else if captions {
        let out = out.unwrap_or_else(|| PathBuf::from("runs/quickstart-captions"));
        let mut opts = if quick {
            CaptionQuickstartOptions::quick(out)
        } else {
            CaptionQuickstartOptions::default_job(out)
        };
        knobs.apply(&mut opts.seeds, &mut opts.train_limit, &mut opts.budget);
        run_captions(&opts, &device, print)?
    } else if lm {
        let out = out.unwrap_or_else(|| PathBuf::from("runs/quickstart-lm"));
        let mut opts = if quick {
            LmQuickstartOptions::quick(out)
        } else {
            LmQuickstartOptions::default_job(out)
        };
        knobs.apply(&mut opts.seeds, &mut opts.train_limit, &mut opts.budget);
        run_lm(&opts, &device, print)?
    } else {
        let out = out.unwrap_or_else(|| PathBuf::from("runs/quickstart"));
        let mut opts = if quick {
            QuickstartOptions::quick(out)
        } else {
            QuickstartOptions::default_job(out)
        };
        knobs.apply(&mut opts.seeds, &mut opts.train_limit, &mut opts.budget);
        run(&opts, &device, print)?
    };
    print_result(
        &r,
        if images || captions {
            "images"
        } else {
            "splits"
        },
    );
    Ok(())
}

/// The flags every variant takes, over the variant's defaults.
struct Knobs {
    seeds: Option<usize>,
    train_limit: Option<usize>,
    budget: Option<Budget>,
}

impl Knobs {
    fn apply(&self, seeds: &mut usize, train_limit: &mut usize, budget: &mut Budget) {
        *seeds = self.seeds.unwrap_or(*seeds);
        *train_limit = self.train_limit.unwrap_or(*train_limit);
        *budget = self.budget.unwrap_or(*budget);
    }
}

fn print_result(r: &QuickstartResult, data: &str) {
    println!();
    print!("{}", headstart::compare::report::table_text(&r.comparison));
    println!("done in {:.0} s: {}", r.seconds, r.baseline);
    let at = |p: &Path| p.display().to_string();
    println!("report: {}", at(&r.compare_dir.join("report.html")));
    println!("        {}", at(&r.compare_dir.join("report.md")));
    println!("runs:   {}", at(&r.compare_dir.join("runs")));
    println!("{data}: {}", at(&r.splits_dir));
}
