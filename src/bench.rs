//! `headstart bench`: training samples/s of a BERT classifier per strategy,
//! with the step's FLOPs and model FLOPs utilisation. The PyTorch side of the
//! comparison is scripts/bench_pytorch.py, run on the same machine.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::Device;
use serde::Serialize;

use crate::cost::flops::BertShape;
use crate::cost::peak::Peak;
use crate::hub::Checkpoint;
use crate::models::bert::{BertClassifier, BertConfig, BertInput};
use crate::models::params::{ParamBuilder, SeededRng, host};
use crate::strategy::Strategy;
use crate::train::optim::{AdamW, AdamWConfig, GradAccumulator};
use crate::train::{apply_freeze, cross_entropy};

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub framework: &'static str,
    pub strategy: String,
    pub batch: usize,
    pub seq: usize,
    pub steps: usize,
    pub seconds_per_step: f64,
    pub samples_per_s: f64,
    pub flops_per_step: f64,
    pub achieved_flops_per_s: f64,
    pub mfu: f64,
}

/// The work each timed step does.
#[derive(Clone, Copy, Debug)]
pub struct StepShape {
    pub batch: usize,
    pub seq: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
}

/// Times training steps of each strategy.
pub fn train_steps(
    model_dir: &Path,
    strategies: &[Strategy],
    shape_of_step: StepShape,
    peak: &Peak,
    device: &Device,
) -> Result<Vec<BenchResult>> {
    let StepShape {
        batch,
        seq,
        steps,
        warmup,
    } = shape_of_step;
    let config = BertConfig::from_file(&model_dir.join("config.json"))?;
    let checkpoint = Checkpoint::load(model_dir)?;
    let train_device = device.clone().autodiff();
    let shape = BertShape {
        layers: config.num_hidden_layers,
        hidden: config.hidden_size,
        ffn: config.intermediate_size,
        labels: 2,
    };
    // [CLS] random ids [SEP], fixed length: every step does the same work.
    let mut rng = SeededRng::new(0);
    let mut ids = Vec::with_capacity(batch * seq);
    for _ in 0..batch {
        ids.push(101i64);
        for _ in 1..seq - 1 {
            ids.push(1000 + (rng.next_u64() % 29000) as i64);
        }
        ids.push(102);
    }
    let labels: Vec<i64> = (0..batch).map(|i| (i % 2) as i64).collect();
    let mut results = Vec::new();
    for strategy in strategies {
        strategy.check(config.num_hidden_layers)?;
        let mut builder = ParamBuilder::pretrained(&checkpoint, &train_device, 0);
        let model = BertClassifier::build(&config, &mut builder, 2)?;
        let trainable = strategy.trainable(config.num_hidden_layers, 0);
        let mut model = apply_freeze(model, &trainable);
        let mut opt = AdamW::new(AdamWConfig::default());
        let mut acc = GradAccumulator::default();
        let input = BertInput::from_host(
            &ids,
            &vec![0; ids.len()],
            &vec![1; ids.len()],
            batch,
            seq,
            &train_device,
        );
        let targets = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(labels.clone(), [batch]),
            &train_device,
        );
        let mut timed = 0.0;
        for i in 0..warmup + steps {
            let t0 = Instant::now();
            let frozen = trainable.iter().take_while(|t| !**t).count();
            let loss = cross_entropy(model.forward_frozen_prefix(&input, frozen), targets.clone());
            let mut grads = loss.backward();
            acc.add(&model, &mut grads);
            model = opt.step(model, &mut acc, &|_| 5e-5, 1.0);
            // Wait for the device: read one parameter back.
            let _ = host(
                &model
                    .classifier
                    .bias
                    .as_ref()
                    .expect("classifier bias")
                    .val(),
            );
            if i >= warmup {
                timed += t0.elapsed().as_secs_f64();
            }
        }
        let per_step = timed / steps.max(1) as f64;
        let flops = shape.train_step(batch, seq, &trainable);
        results.push(BenchResult {
            framework: "headstart",
            strategy: strategy.to_string(),
            batch,
            seq,
            steps,
            seconds_per_step: per_step,
            samples_per_s: batch as f64 / per_step,
            flops_per_step: flops,
            achieved_flops_per_s: flops / per_step,
            mfu: flops / per_step / peak.flops_per_s,
        });
    }
    Ok(results)
}
