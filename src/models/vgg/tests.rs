use super::*;
use crate::hub::{Checkpoint, DType};
use crate::models::TaskModel;
use crate::models::params::host;
use crate::models::state::{Source, export, load};
use crate::tasks::Task;
use crate::tasks::classification::{ClassificationHead, LabelMap};
use crate::tasks::image::ImageClassification;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vision")
        .join(name)
}

fn reference(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// The fixtures' input: `scale` sin(0.1(n+1)(h+1) + 0.07(c+1)(w+1)), f64 then f32.
pub(crate) fn sine_input(n: usize, side: usize, scale: f64) -> Tensor<4> {
    let mut v = Vec::with_capacity(n * 3 * side * side);
    for b in 0..n {
        for c in 0..3 {
            for h in 0..side {
                for w in 0..side {
                    let x = 0.1 * (b + 1) as f64 * (h + 1) as f64
                        + 0.07 * (c + 1) as f64 * (w + 1) as f64;
                    v.push((x.sin() as f32 as f64 * scale) as f32);
                }
            }
        }
    }
    Tensor::from_data(
        burn::tensor::TensorData::new(v, [n, 3, side, side]),
        &Device::default(),
    )
}

fn classifier(config: &Vgg16Config, labels: usize) -> TaskModel<Vgg16, ClassificationHead> {
    let device = Device::default();
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..labels).map(|i| i.to_string()).collect(),
        },
        recipe: Recipe::imagenet(config.image_size as u32),
        seed: 0,
    };
    let body = Vgg16::new(config, &device).unwrap();
    let head = task.new_head(&body, &device);
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

/// max |got - want| <= 1e-4 of the output scale.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale.max(1e-3),
        "{what}: max |diff| {diff} (scale {scale})"
    );
}

fn narrow_config(reference: &serde_json::Value) -> Vgg16Config {
    let mut blocks = vec![vec![]];
    for v in reference["cfg"].as_array().unwrap() {
        match v.as_u64() {
            Some(c) => blocks.last_mut().unwrap().push(c as usize),
            None => blocks.push(vec![]),
        }
    }
    blocks.pop();
    Vgg16Config {
        blocks,
        hidden: reference["hidden"].as_u64().unwrap() as usize,
        image_size: reference["input"]["side"].as_u64().unwrap() as usize,
        ..Vgg16Config::default()
    }
}

#[test]
fn logits_and_pooled_features_match_torchvision_on_narrow_checkpoints() {
    let reference = reference("vgg16_narrow.json");
    let side = reference["input"]["side"].as_u64().unwrap() as usize;
    for (name, batch_norm) in [("vgg16", false), ("vgg16_bn", true)] {
        let r = &reference[name];
        let file = fixture(r["weights_file"].as_str().unwrap());
        let checkpoint = Checkpoint::load_file(&file).unwrap();
        let config = Vgg16Config {
            batch_norm,
            ..narrow_config(&reference)
        };
        // the file describes itself: BatchNorm, classifier, widths
        let inferred = Vgg16Config::from_checkpoint(&checkpoint);
        assert_eq!(
            (
                inferred.blocks.clone(),
                inferred.batch_norm,
                inferred.hidden
            ),
            (config.blocks.clone(), batch_norm, config.hidden)
        );
        assert!(inferred.include_top);

        // the full network: every key of the file used, fc8 as the head
        let (model, _) = load(classifier(&config, 10), Source::Exact(&checkpoint), 0).unwrap();
        let x = sine_input(2, side, 1.0);
        let sum: f64 = host(&x).1.iter().map(|v| *v as f64).sum();
        assert!((sum - reference["input"]["sum"].as_f64().unwrap()).abs() < 1e-6);
        let logits = host(&model.head.forward(model.features(Flow::Maps(x.clone()), 0))).1;
        assert_close(&logits, &rows(&r["logits"]), &format!("{name} logits"));

        // the conv base: globally pooled block5
        let base = Vgg16Config {
            include_top: false,
            ..config.clone()
        };
        let (model, report) =
            load(classifier(&base, 3), Source::Pretrained(&checkpoint), 0).unwrap();
        assert!(report.missing.is_empty(), "{:?}", report.missing);
        assert_eq!(report.unexpected.len(), 6, "{:?}", report.unexpected);
        match model.features(Flow::Maps(x), 0) {
            Flow::Pooled(f) => assert_close(&host(&f).1, &rows(&r["pooled_features"]), name),
            other => panic!("{other:?}"),
        }

        // export writes torchvision's keys back
        let (model, _) = load(classifier(&config, 10), Source::Exact(&checkpoint), 0).unwrap();
        let mut keys: Vec<String> = export(&model, &|_| true)
            .into_iter()
            .map(|(k, _, _)| k)
            .collect();
        keys.sort();
        let want: Vec<String> = r["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, want);
    }
}

#[test]
fn module_paths_spell_torchvision_keys() {
    let device = Device::default();
    let m = Vgg16::new(&Vgg16Config::default(), &device).unwrap();
    let convs: Vec<String> = (0..5)
        .flat_map(|b| {
            let m = &m;
            (0..m.config.blocks[b].len())
                .map(move |j| m.key_path(&format!("blocks.{b}.convs.{j}.conv.weight")))
        })
        .collect();
    let want: Vec<String> = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        .iter()
        .map(|i| format!("features.{i}.weight"))
        .collect();
    assert_eq!(convs, want);
    assert_eq!(m.key_path("classifier.fc6.weight"), "classifier.0.weight");
    assert_eq!(m.key_path("classifier.fc7.bias"), "classifier.3.bias");
    assert_eq!(m.head_key("classifier.weight"), "classifier.6.weight");
    let bn = Vgg16::new(
        &Vgg16Config {
            batch_norm: true,
            ..Vgg16Config::default()
        },
        &device,
    )
    .unwrap();
    // torchvision vgg16_bn: conv, bn, relu per layer; pools at 6, 13, 23, 33, 43
    assert_eq!(
        bn.key_path("blocks.0.convs.1.conv.weight"),
        "features.3.weight"
    );
    assert_eq!(bn.key_path("blocks.0.convs.1.bn.gamma"), "features.4.gamma");
    assert_eq!(bn.key_path("blocks.1.convs.0.conv.bias"), "features.7.bias");
    assert_eq!(
        bn.key_path("blocks.4.convs.2.conv.weight"),
        "features.40.weight"
    );
    let base = Vgg16::new(&Vgg16Config::conv_base(), &device).unwrap();
    // `bench --arch vgg16` times the conv base, as the PyTorch side does
    let reference = <Vgg16 as crate::models::Architecture>::reference(&device).unwrap();
    assert_eq!(reference.num_params(), 14_714_688);
    assert_eq!(base.head_key("classifier.weight"), "classifier.weight");
}

#[test]
fn imagenet_vgg16_has_the_published_size_and_cost() {
    let device = Device::default();
    let m = Vgg16::new(&Vgg16Config::default(), &device).unwrap();
    // torchvision vgg16: 138,357,544 parameters, fc8 (4096 * 1000 + 1000) included
    assert_eq!(m.num_params() + 4096 * 1000 + 1000, 138_357_544);
    // 15.47 G multiply-adds at 224 px with the 1000-class fc8 (torchvision's docs)
    let macs = m.group_flops(1, 1).iter().sum::<f64>() / 2.0 + 4096.0 * 1000.0;
    assert!((macs / 1e9 - 15.47).abs() < 0.005, "{macs}");
    assert_eq!(m.groups().len(), 7);
    assert_eq!(
        m.reads_after(5),
        Positions::Map {
            channels: 512,
            height: 7,
            width: 7
        }
    );
    assert_eq!(m.reads_after(6), Positions::Vector);
    assert_eq!(m.feature_size(), 4096);

    let base = Vgg16::new(&Vgg16Config::conv_base(), &device).unwrap();
    // `bench --arch vgg16` times the conv base, as the PyTorch side does
    let reference = <Vgg16 as crate::models::Architecture>::reference(&device).unwrap();
    assert_eq!(reference.num_params(), 14_714_688);
    // Keras VGG16(include_top=False): 14,714,688 parameters, ~15.35 G MACs
    assert_eq!(base.num_params(), 14_714_688);
    let flops = base.group_flops(2, 1);
    assert_eq!(flops.len(), 6);
    let macs = flops.iter().sum::<f64>() / 2.0 / 2.0;
    assert!((macs / 1e9 - 15.35).abs() < 0.005, "{macs}");
    let names: Vec<String> = base.groups().into_iter().map(|g| g.name).collect();
    assert_eq!(
        names,
        ["block1", "block2", "block3", "block4", "block5", "head"]
    );
    assert_eq!(
        base.reads_after(2),
        Positions::Map {
            channels: 128,
            height: 56,
            width: 56
        }
    );
    assert_eq!(base.reads_after(5), Positions::Vector);
    assert_eq!(base.feature_size(), 512);
    let small = base.with_image_size(32);
    assert_eq!(
        small.reads_after(4),
        Positions::Map {
            channels: 512,
            height: 2,
            width: 2
        }
    );
    assert!(
        Vgg16::new(
            &Vgg16Config {
                image_size: 16,
                ..Vgg16Config::default()
            },
            &device
        )
        .unwrap_err()
        .to_string()
        .contains("at least 32")
    );
}

fn t(shape: &[usize], data: Vec<f32>) -> HostTensor {
    HostTensor {
        shape: shape.to_vec(),
        dtype: DType::F32,
        data,
    }
}

#[test]
fn keras_names_map_onto_torchvision() {
    assert_eq!(
        keras_conv("functional_1/block3_conv2_1/convolution/ReadVariableOp:0"),
        Some((3, 2))
    );
    assert_eq!(
        keras_conv("functional_1/block1_conv1_1/Squeeze:0"),
        Some((1, 1))
    );
    assert_eq!(keras_conv("block5_conv3/kernel:0"), Some((5, 3)));
    assert_eq!(keras_conv("vgg16/block2_conv1/BiasAdd"), Some((2, 1)));
    assert_eq!(keras_conv("block1_pool/MaxPool"), None);
    assert_eq!(
        keras_conv("functional_1/dense_1/BiasAdd/ReadVariableOp:0"),
        None
    );
    assert_eq!(keras_conv("block1_conv1_bn/gamma"), None);

    // an HWIO kernel (Keras h5 layout) is transposed to OIHW; an OIHW one kept
    let hwio: Vec<f32> = (0..3 * 3 * 2 * 4).map(|v| v as f32).collect();
    let mut ck = Checkpoint::default();
    ck.tensors.insert(
        "block1_conv1/kernel:0".into(),
        t(&[3, 3, 2, 4], hwio.clone()),
    );
    ck.tensors
        .insert("block1_conv1/bias:0".into(), t(&[4], vec![1., 2., 3., 4.]));
    ck.tensors.insert(
        "x/block1_conv2_1/convolution/ReadVariableOp:0".into(),
        t(&[5, 4, 3, 3], vec![0.5; 180]),
    );
    ck.tensors
        .insert("dense/kernel:0".into(), t(&[2, 2], vec![0.; 4]));
    let renamed = keras_to_torchvision(&ck).unwrap();
    let w = &renamed.tensors["features.0.weight"];
    assert_eq!(w.shape, [4, 2, 3, 3]);
    // OIHW [o=1, i=0, y=2, x=1] (flat ((o * 2 + i) * 3 + y) * 3 + x) is HWIO [2, 1, 0, 1]
    assert_eq!(w.data[(2 * 3 + 2) * 3 + 1], hwio[((2 * 3 + 1) * 2) * 4 + 1]);
    assert_eq!(renamed.tensors["features.0.bias"].data, [1., 2., 3., 4.]);
    assert_eq!(renamed.tensors["features.2.weight"].shape, [5, 4, 3, 3]);
    assert!(renamed.tensors.contains_key("dense/kernel:0"));
    assert!(renamed.notes.last().unwrap().contains("2 convolutions"));
    let config = Vgg16Config::from_checkpoint(&ck);
    assert_eq!(config.input, InputConvention::Caffe);
    assert!(!config.include_top);
    assert_eq!(&config.blocks[0], &[4, 5]);
    assert_eq!(config.recipe(224), Recipe::caffe(224));
    assert!(keras_to_torchvision(&Checkpoint::default()).is_none());
}

#[test]
fn scratch_init_is_torchvisions() {
    let reference = reference("vgg16_narrow.json");
    let config = narrow_config(&reference);
    let (model, report) = load(classifier(&config, 10), Source::Scratch, 7).unwrap();
    assert!(report.from_scratch);
    let tensors = export(&model, &|_| true);
    let get = |k: &str| {
        tensors
            .iter()
            .find(|(name, _, _)| name == k)
            .unwrap_or_else(|| panic!("{k}"))
            .2
            .clone()
    };
    let std = |v: &[f32]| {
        let m = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    // Kaiming normal, fan out: block4's 32x32x3x3 convs, std sqrt(2 / (32 * 9))
    let w = get("features.19.weight");
    let want = (2.0f64 / (32.0 * 9.0)).sqrt();
    assert!((std(&w) / want - 1.0).abs() < 0.1, "{} vs {want}", std(&w));
    // Linear normal(0, 0.01); every bias zero
    let fc6 = get("classifier.0.weight");
    assert!((std(&fc6) / 0.01 - 1.0).abs() < 0.05, "{}", std(&fc6));
    for k in ["features.19.bias", "classifier.0.bias", "classifier.6.bias"] {
        assert!(get(k).iter().all(|v| *v == 0.0), "{k}");
    }
}
