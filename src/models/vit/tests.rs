use super::*;
use crate::hub::Checkpoint;
use crate::models::TaskModel;
use crate::models::params::host;
use crate::models::state::{Source, export, group_counts, load};
use crate::tasks::Task;
use crate::tasks::classification::{ClassificationHead, LabelMap};
use crate::tasks::image::ImageClassification;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vision")
        .join(name)
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("vit_random.json")).unwrap()).unwrap()
}

/// The fixtures' input: sin(0.1(n+1)(h+1) + 0.07(c+1)(w+1)), f64 then f32.
fn sine_input(n: usize, side: usize) -> Tensor<4> {
    let mut v = Vec::with_capacity(n * 3 * side * side);
    for b in 0..n {
        for c in 0..3 {
            for h in 0..side {
                for w in 0..side {
                    let x = 0.1 * (b + 1) as f64 * (h + 1) as f64
                        + 0.07 * (c + 1) as f64 * (w + 1) as f64;
                    v.push(x.sin() as f32);
                }
            }
        }
    }
    Tensor::from_data(
        burn::tensor::TensorData::new(v, [n, 3, side, side]),
        &Device::default(),
    )
}

fn classifier(body: Vit, labels: usize) -> TaskModel<Vit, ClassificationHead> {
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..labels).map(|i| i.to_string()).collect(),
        },
        recipe: crate::data::preprocess::Recipe::imagenet(224),
        seed: 0,
    };
    let head = task.new_head(&body, &Device::default());
    TaskModel { body, head }
}

fn rows(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("max |logit diff| {diff:.3e} (scale {scale:.3})");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "max |diff| {diff} (scale {scale})"
    );
}

fn logits(model: &TaskModel<Vit, ClassificationHead>, x: Tensor<4>) -> Vec<f32> {
    let features = model.features(Flow::Maps(x), 0);
    host(&model.head.forward(features)).1
}

#[test]
fn logits_match_transformers_on_a_random_checkpoint() {
    let r = reference();
    let dir = fixture("vit_random");
    let body = Vit::from_config_file(&dir.join("config.json"), &Device::default()).unwrap();
    assert_eq!(body.config.hidden_size, 64);
    assert_eq!(body.config.positions(), 17);
    let checkpoint = Checkpoint::open(&dir).unwrap();
    // every parameter from the file, every key of the file used
    let (model, _) = load(classifier(body, 10), Source::Exact(&checkpoint), 0).unwrap();
    let x = sine_input(2, 32);
    let sum: f64 = host(&x).1.iter().map(|v| *v as f64).sum();
    assert!((sum - r["input32_sum"].as_f64().unwrap()).abs() < 1e-6);
    assert_close(&logits(&model, x), &rows(&r["logits"]));
}

#[test]
fn position_grid_is_resampled_like_interpolate_pos_encoding() {
    let r = reference();
    let dir = fixture("vit_random");
    let body = Vit::from_config_file(&dir.join("config.json"), &Device::default())
        .unwrap()
        .with_image_size(48);
    assert_eq!(body.config.positions(), 37);
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let (model, report) = load(classifier(body, 10), Source::Pretrained(&checkpoint), 0).unwrap();
    assert_eq!(
        report.resampled,
        vec!["vit.embeddings.position_embeddings [1, 17, 64] -> [1, 37, 64]".to_string()]
    );
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    let (shape, pos) = host(&model.body.embeddings.position_embeddings.val());
    let want = &r["position_embeddings48"];
    assert_eq!(shape, vec![1, 37, 64]);
    let sum: f64 = pos.iter().map(|v| *v as f64).sum();
    let sum_sq: f64 = pos.iter().map(|v| (*v as f64).powi(2)).sum();
    assert!((sum - want["sum"].as_f64().unwrap()).abs() < 1e-4, "{sum}");
    assert!(
        (sum_sq - want["sum_sq"].as_f64().unwrap()).abs() < 1e-4,
        "{sum_sq}"
    );
    let first: Vec<f32> = want["first_patch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_close(&pos[64..72], &first);
    assert_close(
        &logits(&model, sine_input(2, 48)),
        &rows(&r["logits48_interpolated"]),
    );
    // the model holds the new grid: a run's own checkpoint of it loads exactly
    let saved = export(&model, &|_| true);
    assert!(
        saved
            .iter()
            .any(|(k, s, _)| k == "vit.embeddings.position_embeddings" && s == &vec![1, 37, 64])
    );
}

#[test]
fn a_grid_that_cannot_be_resampled_is_a_shape_error() {
    let dir = fixture("vit_random");
    let mut checkpoint = Checkpoint::open(&dir).unwrap();
    let t = checkpoint
        .tensors
        .get_mut("vit.encoder.layer.0.intermediate.dense.weight")
        .unwrap();
    t.shape = vec![64, 128];
    let body = Vit::from_config_file(&dir.join("config.json"), &Device::default()).unwrap();
    let err = load(classifier(body, 10), Source::Pretrained(&checkpoint), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("vit.encoder.layer.0.intermediate.dense.weight")
            && err.contains("intermediate_size"),
        "{err}"
    );
}

#[test]
fn bicubic_resampling_keeps_a_grid_of_the_same_size_and_constants() {
    let grid: Vec<f32> = (0..4 * 4 * 2).map(|i| (i as f32 * 0.37).sin()).collect();
    assert_eq!(bicubic_grid(&grid, 4, 4, 2), grid);
    let flat = vec![0.25f32; 3 * 3 * 5];
    for v in bicubic_grid(&flat, 3, 7, 5) {
        assert!((v - 0.25).abs() < 1e-6);
    }
}

#[test]
fn module_paths_spell_the_hub_keys() {
    let body = Vit::new(&VitConfig::default(), &Device::default()).unwrap();
    let model = classifier(body, 3);
    let keys: Vec<String> = export(&model, &|p| !p.contains("layer.1"))
        .into_iter()
        .map(|t| t.0)
        .collect();
    for k in [
        "vit.embeddings.cls_token",
        "vit.embeddings.position_embeddings",
        "vit.embeddings.patch_embeddings.projection.weight",
        "vit.embeddings.patch_embeddings.projection.bias",
        "vit.encoder.layer.0.attention.attention.query.weight",
        "vit.encoder.layer.0.attention.attention.value.bias",
        "vit.encoder.layer.0.attention.output.dense.weight",
        "vit.encoder.layer.0.intermediate.dense.bias",
        "vit.encoder.layer.0.output.dense.weight",
        "vit.encoder.layer.0.layernorm_before.weight",
        "vit.encoder.layer.0.layernorm_after.bias",
        "vit.layernorm.weight",
        "classifier.weight",
        "classifier.bias",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} not in {keys:?}");
    }
}

#[test]
fn vit_b_16_has_the_published_size_and_cost() {
    let m = Vit::new(&VitConfig::default(), &Device::default()).unwrap();
    // 86,567,656 parameters with the 1000-class classifier (768 * 1000 + 1000)
    assert_eq!(m.num_params() + 768 * 1000 + 1000, 86_567_656);
    // 17.56 G multiply-adds at 224 px with the classifier's 0.77 M
    let macs: f64 = m.group_flops(1, 1).iter().sum::<f64>() / 2.0 + 768.0 * 1000.0;
    assert!((macs / 1e9 - 17.56).abs() < 0.005, "{macs}");
    assert_eq!(m.groups().len(), 14);
    assert_eq!(
        m.reads_after(0),
        Positions::Map {
            channels: 3,
            height: 224,
            width: 224
        }
    );
    assert_eq!(m.reads_after(5), Positions::Sequence { len: 197 });
    assert_eq!(m.reads_after(13), Positions::First);
    // at 384 px the grid is 24 x 24: 577 positions, and the layers cost more
    let big = m.with_image_size(384);
    assert_eq!(big.config.positions(), 577);
    let macs384: f64 = big.group_flops(1, 1).iter().sum::<f64>() / 2.0;
    assert!(macs384 > 3.0 * macs, "{macs384}");
}

#[test]
fn scratch_init_follows_transformers() {
    let c = VitConfig {
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 128,
        image_size: 32,
        patch_size: 8,
        ..VitConfig::default()
    };
    let body = Vit::new(&c, &Device::default()).unwrap();
    let (m, report) = load(classifier(body, 5), Source::Scratch, 3).unwrap();
    assert!(report.from_scratch);
    let (_, g) = host(&m.body.layernorm.gamma.val());
    assert!(g.iter().all(|&v| v == 1.0));
    let (_, b) = host(
        &m.body.encoder.layer[1]
            .layernorm_after
            .beta
            .as_ref()
            .unwrap()
            .val(),
    );
    assert!(b.iter().all(|&v| v == 0.0));
    let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    for t in [
        host(
            &m.body.encoder.layer[0]
                .attention
                .attention
                .query
                .weight
                .val(),
        )
        .1,
        host(&m.body.embeddings.patch_embeddings.projection.weight.val()).1,
        host(&m.body.embeddings.position_embeddings.val()).1,
        host(&m.head.classifier.weight.val()).1,
    ] {
        assert!((std(&t) - 0.02).abs() < 0.004, "std {}", std(&t));
        assert!(t.iter().all(|v| v.abs() <= 2.0));
    }
    let (_, cls) = host(&m.body.embeddings.cls_token.val());
    assert!(cls.iter().any(|&v| v != 0.0));
    let (_, bias) = host(
        &m.body
            .embeddings
            .patch_embeddings
            .projection
            .bias
            .as_ref()
            .unwrap()
            .val(),
    );
    assert!(bias.iter().all(|&v| v == 0.0));
    let counts = group_counts(&m);
    assert_eq!(counts[0].0, "embeddings");
    assert_eq!(counts[0].1, 64 + 17 * 64 + 64 * 3 * 8 * 8 + 64);
    assert_eq!(counts[3], ("head".to_string(), 2 * 64 + 64 * 5 + 5));
}

#[test]
fn groups_run_in_pieces_equal_the_whole() {
    let dir = fixture("vit_random");
    let body = Vit::from_config_file(&dir.join("config.json"), &Device::default()).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let (m, _) = load(classifier(body, 10), Source::Exact(&checkpoint), 0).unwrap();
    let m = m.body;
    let whole = m.run(Flow::Maps(sine_input(2, 32)), 0..4);
    let half = m.run(Flow::Maps(sine_input(2, 32)), 0..2);
    let Flow::Hidden { x, mask } = half else {
        panic!("the encoder outputs hidden states");
    };
    assert_eq!(x.dims(), [2, 17, 64]);
    assert_eq!(host(&mask).1, vec![1.0; 34]);
    // what the head group reads after the last layer: [CLS] alone
    let layers = m.run(Flow::Hidden { x, mask }, 2..3);
    let Flow::Hidden { x, .. } = layers else {
        panic!("the encoder outputs hidden states");
    };
    let first = Flow::Hidden {
        x: x.narrow(1, 0, 1),
        mask: Tensor::ones([2, 1], &Device::default()),
    };
    let (Flow::Pooled(a), Flow::Pooled(b)) = (whole, m.run(first, 3..4)) else {
        panic!("the top group pools");
    };
    assert_eq!(host(&a), host(&b));
}

#[test]
fn bad_configs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"hidden_size": 60, "num_attention_heads": 7}"#).unwrap();
    let err = format!("{:#}", VitConfig::from_file(&path).unwrap_err());
    assert!(
        err.contains("config.json") && err.contains("num_attention_heads"),
        "{err}"
    );
    std::fs::write(&path, r#"{"image_size": [224, 224]}"#).unwrap();
    let err = format!("{:#}", VitConfig::from_file(&path).unwrap_err());
    assert!(err.contains("not a valid ViT config.json"), "{err}");
}
