use super::*;
use crate::models::TaskModel;
use crate::models::params::host;
use crate::models::state::{Source, load};
use crate::tasks::Task;
use crate::tasks::classification::{ClassificationHead, LabelMap};
use crate::tasks::image::ImageClassification;

fn classifier(labels: usize, side: usize) -> TaskModel<EfficientNetLite, ClassificationHead> {
    let device = Device::default();
    let task = ImageClassification {
        labels: LabelMap {
            labels: (0..labels).map(|i| i.to_string()).collect(),
        },
        recipe: EfficientNetLiteConfig::recipe(side as u32),
        seed: 0,
    };
    let body = task.adapt_body(EfficientNetLite::reference(&device).unwrap());
    let head = task.new_head(&body, &device);
    TaskModel { body, head }
}

fn reference() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vision/efficientnet_lite0_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn same_padding_puts_the_odd_row_after() {
    assert_eq!(same_padding(224, 3, 2), (0, 1));
    assert_eq!(same_padding(56, 5, 2), (1, 2));
    assert_eq!(same_padding(14, 5, 2), (1, 2));
    assert_eq!(same_padding(28, 5, 1), (2, 2));
    assert_eq!(same_padding(7, 1, 1), (0, 0));
    // an odd side needs less
    assert_eq!(same_padding(225, 3, 2), (1, 1));
}

/// Every efficientnet_pytorch key of the packaged file maps to the timm
/// key the reference script's name map gives (296 of them).
#[test]
fn pytorch_names_map_as_the_reference_script_maps_them() {
    let r = reference();
    let map = r["name_map"].as_object().unwrap();
    assert_eq!(map.len(), 296);
    for (from, to) in map {
        assert_eq!(timm_name(from).as_deref(), to.as_str(), "{from}");
    }
    assert_eq!(timm_name("_blocks.16._bn0.weight"), None);
    assert_eq!(timm_name("_blocks.0._expand_conv.weight"), None);
}

#[test]
fn module_paths_spell_timm_keys_and_every_parameter_has_one() {
    let model = classifier(2, 224);
    let keys: Vec<String> = crate::models::state::export(&model, &|_| true)
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    let r = reference();
    let timm: std::collections::BTreeSet<&str> = r["name_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    let ours: std::collections::BTreeSet<&str> = keys.iter().map(|k| k.as_str()).collect();
    assert_eq!(ours, timm);
}

#[test]
fn flops_match_the_convolutions_timm_runs() {
    let r = reference();
    let model = EfficientNetLite::reference(&Device::default()).unwrap();
    let flops = model.group_flops(1, 1);
    let per = &r["macs"]["per_stage"];
    let mut names = vec!["stem".to_string()];
    names.extend((0..7).map(|s| format!("blocks.{s}")));
    names.push("head".into());
    for (g, name) in names.iter().enumerate() {
        assert_eq!(flops[g], 2.0 * per[name].as_f64().unwrap(), "{name}");
    }
    assert_eq!(
        flops.iter().sum::<f64>(),
        2.0 * r["macs"]["total"].as_f64().unwrap()
    );
}

#[test]
fn group_boundaries_have_the_announced_shapes() {
    for side in [224usize, 57] {
        let model = EfficientNetLite::reference(&Device::default())
            .unwrap()
            .with_image_size(side);
        let x = Tensor::<4>::ones([1, 3, side, side], &Device::default());
        let mut flow = Flow::Maps(x);
        for b in 0..model.groups().len() {
            match (model.reads_after(b), &flow) {
                (
                    Positions::Map {
                        channels,
                        height,
                        width,
                    },
                    Flow::Maps(x),
                ) => assert_eq!(
                    x.dims(),
                    [1, channels, height, width],
                    "{side}: boundary {b}"
                ),
                (Positions::Vector, Flow::Pooled(x)) => assert_eq!(x.dims(), [1, HEAD]),
                (p, f) => panic!("boundary {b}: {p:?} announced, {f:?} produced"),
            }
            flow = model.run(flow, b..b + 1);
        }
    }
}

#[test]
fn scratch_init_is_timms() {
    let (model, _) = load(classifier(3, 64), Source::Scratch, 3).unwrap();
    let std_of = |v: &[f32]| {
        let n = v.len() as f64;
        let m = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        (v.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
    };
    // depthwise 5x5 of stage 2: sqrt(2 / 25)
    let dw = host(&model.body.stages[2].blocks[1].depthwise.conv.weight.val()).1;
    assert!((std_of(&dw) / (2.0f64 / 25.0).sqrt() - 1.0).abs() < 0.05);
    // a 1x1 projection to 80 channels: sqrt(2 / 80)
    let pw = host(&model.body.stages[3].blocks[0].project.conv.weight.val()).1;
    assert!((std_of(&pw) / (2.0f64 / 80.0).sqrt() - 1.0).abs() < 0.05);
}

#[test]
fn recognised_by_either_naming_and_not_with_squeeze_excitation() {
    let r = reference();
    let t = || crate::hub::HostTensor {
        shape: vec![HEAD, 320, 1, 1],
        dtype: crate::hub::DType::F32,
        data: vec![0.0; HEAD * 320],
    };
    let mut c = Checkpoint::default();
    for from in r["name_map"].as_object().unwrap().keys() {
        if from.contains("conv") {
            c.tensors.insert(from.clone(), t());
        }
    }
    assert!(EfficientNetLite::recognises(&c));
    let timm = pytorch_names_to_timm(&c).unwrap();
    assert!(EfficientNetLite::recognises(&timm));
    let mut se = timm.clone();
    se.tensors
        .insert("blocks.1.0.se.conv_reduce.weight".into(), t());
    assert!(!EfficientNetLite::recognises(&se));
}
