use super::tf_port::tf_layer;
use super::*;
use crate::hub::{DType, HostTensor};
use crate::models::TaskModel;
use crate::models::params::host;
use crate::models::state::{Source, load};
use crate::tasks::Task;
use crate::tasks::classification::{ClassificationHead, LabelMap};
use crate::tasks::image::ImageClassification;

fn classifier(
    config: &InceptionV3Config,
    labels: usize,
) -> TaskModel<InceptionV3, ClassificationHead> {
    let device = Device::default();
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..labels).map(|i| i.to_string()).collect(),
        },
        recipe: config.recipe(config.image_size as u32),
        seed: 0,
    };
    let body = InceptionV3::new(config, &device).unwrap();
    let head = task.new_head(&body, &device);
    TaskModel { body, head }
}

/// Every body tensor's checkpoint key, as an export writes it.
fn checkpoint_keys(config: &InceptionV3Config) -> Vec<String> {
    crate::models::state::export(&classifier(config, 2), &|p| p.starts_with("body."))
        .into_iter()
        .map(|(k, _, _)| k)
        .collect()
}

#[test]
fn module_paths_spell_torchvision_keys() {
    let keys = checkpoint_keys(&InceptionV3Config::default());
    for want in [
        "Conv2d_1a_3x3.conv.weight",
        "Conv2d_4a_3x3.bn.weight",
        "Mixed_5b.branch5x5_2.conv.weight",
        "Mixed_5d.branch_pool.bn.running_var",
        "Mixed_6a.branch3x3dbl_3.conv.weight",
        "Mixed_6e.branch7x7dbl_5.conv.weight",
        "Mixed_7a.branch7x7x3_4.bn.bias",
        "Mixed_7b.branch3x3_2a.conv.weight",
        "Mixed_7c.branch3x3dbl_3b.conv.weight",
        "Mixed_7c.branch_pool.conv.weight",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} not among {keys:?}");
    }
    // 94 convolutions, each a weight and four BatchNorm tensors
    assert_eq!(keys.len(), 94 * 5, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| !k.starts_with("stem") && !k.starts_with("mixed")),
        "an unmapped path: {keys:?}"
    );
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len());
}

#[test]
fn tensorflow_names_map_onto_torchvision() {
    for (tf, tv) in [
        ("conv", "Conv2d_1a_3x3"),
        ("conv_3", "Conv2d_3b_1x1"),
        ("conv_4", "Conv2d_4a_3x3"),
        ("mixed.conv", "Mixed_5b.branch1x1"),
        ("mixed.tower.conv_1", "Mixed_5b.branch5x5_2"),
        ("mixed_2.tower_1.conv_2", "Mixed_5d.branch3x3dbl_3"),
        ("mixed_2.tower_2.conv", "Mixed_5d.branch_pool"),
        ("mixed_3.conv", "Mixed_6a.branch3x3"),
        ("mixed_3.tower.conv_2", "Mixed_6a.branch3x3dbl_3"),
        ("mixed_4.tower.conv_2", "Mixed_6b.branch7x7_3"),
        ("mixed_7.tower_1.conv_4", "Mixed_6e.branch7x7dbl_5"),
        ("mixed_7.tower_2.conv", "Mixed_6e.branch_pool"),
        ("mixed_8.tower.conv_1", "Mixed_7a.branch3x3_2"),
        ("mixed_8.tower_1.conv_3", "Mixed_7a.branch7x7x3_4"),
        ("mixed_9.tower_mixed_conv_1", "Mixed_7b.branch3x3_2b"),
        ("mixed_10.tower_1_mixed_conv", "Mixed_7c.branch3x3dbl_3a"),
        ("mixed_10.tower_2_conv", "Mixed_7c.branch_pool"),
    ] {
        assert_eq!(tf_layer(tf).as_deref(), Some(tv), "{tf}");
    }
    for bad in [
        "conv_5",
        "mixed_11.conv",
        "mixed_8.conv",
        "mixed.tower_3.conv",
        "mixed_3.tower_1.conv",
        "pool0",
    ] {
        assert_eq!(tf_layer(bad), None, "{bad}");
    }
}

/// A checkpoint with the FID port's names for every convolution of the
/// body (built from torchvision's names through the TensorFlow table
/// above, inverted by brute force over the names the port uses).
#[test]
fn the_port_checkpoint_is_renamed_with_unit_scale() {
    let t = |shape: Vec<usize>, v: f32| HostTensor {
        data: vec![v; shape.iter().product()],
        shape,
        dtype: DType::F32,
    };
    let mut c = Checkpoint::default();
    for layer in [
        "conv",
        "mixed.tower.conv",
        "mixed_10.tower_2_conv",
        "mixed_4.tower_1.conv_3",
    ] {
        c.tensors.insert(
            format!("net.layers.{layer}.weight"),
            t(vec![4, 3, 1, 1], 0.5),
        );
        for f in ["beta", "mean", "var"] {
            c.tensors
                .insert(format!("net.layers.{layer}.{f}"), t(vec![4], 0.25));
        }
    }
    c.tensors
        .insert("net.layers.something_else".into(), t(vec![1], 0.0));
    assert!(InceptionV3::recognises(&c));
    assert_eq!(
        InceptionV3Config::from_checkpoint(&c),
        InceptionV3Config::fid()
    );
    let r = tf_to_torchvision(&c).unwrap();
    assert_eq!(
        r.tensor("Mixed_6b.branch7x7dbl_4.bn.weight").unwrap().data,
        [1.0; 4]
    );
    assert_eq!(
        r.tensor("Mixed_6b.branch7x7dbl_4.bn.bias").unwrap().data,
        [0.25; 4]
    );
    assert_eq!(
        r.tensor("Mixed_7c.branch_pool.bn.running_var")
            .unwrap()
            .data,
        [0.25; 4]
    );
    assert_eq!(
        r.tensor("Conv2d_1a_3x3.conv.weight").unwrap().shape,
        [4, 3, 1, 1]
    );
    // what it cannot name stays, to be reported as unexpected
    assert!(r.tensors.contains_key("net.layers.something_else"));
    assert!(
        r.notes.last().unwrap().contains("16 tensors"),
        "{:?}",
        r.notes
    );
    assert!(tf_to_torchvision(&r).is_none());
}

/// The shapes `reads_after` announces are the ones the groups produce.
#[test]
fn group_boundaries_have_the_announced_shapes() {
    for (config, side) in [
        (InceptionV3Config::default(), 75usize),
        (InceptionV3Config::fid(), 96),
    ] {
        let config = InceptionV3Config {
            image_size: side,
            ..config
        };
        let model = InceptionV3::new(&config, &Device::default()).unwrap();
        let groups = model.groups();
        assert_eq!(groups.len(), 13);
        assert_eq!(groups[1].name, "Mixed_5b");
        assert_eq!(groups[11].name, "Mixed_7c");
        let x = Tensor::<4>::ones([1, 3, side, side], &Device::default());
        let mut flow = Flow::Maps(x);
        for b in 0..groups.len() {
            match (model.reads_after(b), &flow) {
                (
                    Positions::Map {
                        channels,
                        height,
                        width,
                    },
                    Flow::Maps(x),
                ) => assert_eq!(x.dims(), [1, channels, height, width], "boundary {b}"),
                (Positions::Vector, Flow::Pooled(x)) => assert_eq!(x.dims(), [1, FEATURES]),
                (p, f) => panic!("boundary {b}: {p:?} announced, {f:?} produced"),
            }
            flow = model.run(flow, b..b + 1);
        }
    }
}

#[test]
fn too_small_images_and_bad_dropout_are_refused() {
    let small = InceptionV3Config {
        image_size: 74,
        ..InceptionV3Config::default()
    };
    let err = InceptionV3::new(&small, &Device::default()).unwrap_err();
    assert!(format!("{err}").contains("at least 75"), "{err}");
    let bad = InceptionV3Config {
        dropout: 1.0,
        ..InceptionV3Config::default()
    };
    assert!(InceptionV3::new(&bad, &Device::default()).is_err());
}

#[test]
fn recipes_follow_the_weights() {
    let tv = InceptionV3Config::default().recipe(299);
    assert_eq!(
        (tv.resize, tv.crop, tv.mean, tv.std),
        (342, 299, HALF, HALF)
    );
    let fid = InceptionV3Config::fid().recipe(299);
    assert_eq!((fid.resize, fid.crop), (299, 299));
    assert_eq!(fid.resize_mode, ResizeMode::Stretch);
    // (pixel - 128) / 128 in [-1, 1)
    assert_eq!(
        (fid.rescale_factor, fid.mean, fid.std),
        (1.0, [128.0; 3], [128.0; 3])
    );
}

#[test]
fn scratch_init_is_torchvisions() {
    let (model, _) = load(
        classifier(&InceptionV3Config::default(), 3),
        Source::Scratch,
        7,
    )
    .unwrap();
    let w = host(&model.body.mixed[4].branches[2].convs[1].conv.weight.val()).1;
    let n = w.len() as f64;
    let mean = w.iter().map(|v| *v as f64).sum::<f64>() / n;
    let std = (w.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(
        mean.abs() < 0.005 && (std - 0.1).abs() < 0.005,
        "{mean} {std}"
    );
    let gamma = host(&model.body.stem[0].bn.gamma.val()).1;
    assert!(gamma.iter().all(|v| *v == 1.0));
}

#[test]
fn the_classifier_is_torchvisions_fc() {
    let model = InceptionV3::new(&InceptionV3Config::default(), &Device::default()).unwrap();
    assert_eq!(model.head_key("classifier.weight"), "fc.weight");
    assert_eq!(model.head_key("classifier.bias"), "fc.bias");
}

/// torchvision's Inception v3 at 299 pixels: 5,711,168,096 multiply-adds in
/// its convolutions (counted with forward hooks by
/// `scripts/make_inception_reference.py`, the `macs` of its JSON), per block.
#[test]
fn flops_match_the_convolutions_torch_runs() {
    let model = InceptionV3::new(&InceptionV3Config::default(), &Device::default()).unwrap();
    let macs: [u64; 12] = [
        1_340_779_616,
        312_345_600,
        338_688_000,
        348_096_000,
        401_937_408,
        374_063_104,
        487_702_528,
        487_702_528,
        617_914_368,
        291_004_416,
        322_437_120,
        388_497_408,
    ];
    let flops = model.group_flops(1, 1);
    assert_eq!(flops.len(), 13);
    for (g, want) in macs.iter().enumerate() {
        assert_eq!(flops[g], 2.0 * *want as f64, "group {g}");
    }
    assert_eq!(flops.iter().sum::<f64>(), 2.0 * 5_711_168_096.0);
}
