use super::*;
use crate::data::preprocess::Recipe;
use burn::module::Param;

fn core(start: Vec<u32>) -> CaptionCore {
    let vocab: serde_json::Map<String, serde_json::Value> = ["<eos>", "<unk>", "a", "bag", "coat"]
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    let tokenizer = tokenizers::Tokenizer::from_bytes(tok.to_string().as_bytes()).unwrap();
    let state = CaptionTaskState {
        recipe: Recipe::imagenet(32),
        decoder: DecoderPart {
            model_type: "gpt2".into(),
            dir: PathBuf::new(),
            strategy: Strategy::Full,
            lora: None,
        },
        mapper: MapperKind::Mlp,
        prefix_length: 2,
        mapper_hidden: 4,
        mapper_layers: 0,
        feature_grid: 0,
        start,
        eos: vec![0],
        max_new_tokens: 5,
        decoding: Decoding::default(),
    };
    CaptionCore::new(state, tokenizer, 0)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

#[test]
fn a_caption_row_is_start_tokens_words_and_eos() {
    assert_eq!(core(vec![]).caption_tokens("a bag").unwrap(), vec![2, 3, 0]);
    assert_eq!(
        core(vec![4]).caption_tokens("a coat").unwrap(),
        vec![4, 2, 4, 0]
    );
    // generated ids read back without the end token
    assert_eq!(core(vec![]).text(&[2, 3, 0]), "a bag");
}

#[test]
fn a_batch_holds_every_caption_of_each_image_and_predicts_no_start_token() {
    let c = core(vec![4]);
    let split = CaptionSplit {
        images: ImageSplit::from_images(
            vec![image::RgbImage::new(4, 4); 3],
            vec![0; 3],
            &c.state.recipe,
        ),
        tokens: vec![
            vec![vec![4, 2, 0]],
            vec![vec![4, 2, 3, 0], vec![4, 3, 0]],
            vec![vec![4, 4, 0]],
        ],
        references: vec![vec![]; 3],
        labels: None,
    };
    let t = c.batch(&split, &[1, 2], &Device::default());
    // image 1's two captions, then image 2's
    assert_eq!(host(t.owner.float()), vec![0.0, 0.0, 1.0]);
    assert_eq!(
        host(t.ids.float()),
        vec![4.0, 2.0, 3.0, 0.0, 4.0, 3.0, 0.0, 0.0, 4.0, 4.0, 0.0, 0.0]
    );
    assert_eq!(
        host(t.mask),
        vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(
        host(t.weight),
        vec![0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    );
    assert_eq!(t.count, 7);
}

#[test]
fn labels_count_only_where_every_reference_names_the_same_items() {
    let refs = |r: &[&[&str]]| -> Vec<Vec<String>> {
        r.iter()
            .map(|i| i.iter().map(|s| s.to_string()).collect())
            .collect()
    };
    let agreed = agreed_labels(&refs(&[
        &[
            "A bag at the top left and a coat below.",
            "A coat under a bag.",
        ],
        &["A sneaker."],
    ]))
    .unwrap();
    assert_eq!(agreed.len(), 2);
    assert_eq!(agreed[1].len(), 1);
    let mut bag_coat = agreed[0].clone();
    bag_coat.sort_unstable();
    assert_eq!(bag_coat.len(), 2);
    // references that disagree, or name nothing, leave the metric out
    assert!(agreed_labels(&refs(&[&["A bag."], &["A coat.", "A bag."]])).is_none());
    assert!(agreed_labels(&refs(&[&["A bag."], &["Nothing to see."]])).is_none());
}

#[test]
fn without_a_mapper_the_features_must_be_the_embedding_width() {
    let pooled = (0, Some(0));
    let err = check_parts(MapperKind::None, 1, 1280, 576, pooled, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1280") && err.contains("576") && err.contains("--mapper mlp"));
    assert!(check_parts(MapperKind::None, 1, 576, 576, pooled, 2).is_ok());
    assert!(check_parts(MapperKind::None, 3, 576, 576, pooled, 2).is_err());
    assert!(check_parts(MapperKind::Mlp, 10, 1280, 576, pooled, 2).is_ok());
    assert!(check_parts(MapperKind::Mlp, 0, 1280, 576, pooled, 2).is_err());
}

#[test]
fn a_feature_grid_needs_a_feature_map_and_a_mapper() {
    // a ViT (no feature map) cannot give a grid
    let err = check_parts(MapperKind::Mlp, 10, 768, 576, (2, None), 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--feature-grid 2") && err.contains("--feature-grid 0"),
        "{err}"
    );
    // --mapper none has nowhere to put 4 cells
    let err = check_parts(MapperKind::None, 1, 576, 576, (2, Some(0)), 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4 cells") && err.contains("--mapper transformer"),
        "{err}"
    );
    let err = check_parts(MapperKind::Transformer, 10, 1280, 576, (2, Some(0)), 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--mapper-layers"), "{err}");
    assert!(check_parts(MapperKind::Transformer, 10, 1280, 576, (2, Some(0)), 2).is_ok());
    assert!(check_parts(MapperKind::Mlp, 10, 1280, 576, (3, Some(0)), 2).is_ok());
}

#[test]
fn the_mlp_prefix_has_prefix_length_positions_of_the_embedding_width() {
    let device = Device::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tied");
    let decoder =
        crate::models::gpt2::Gpt2::from_config_file(&dir.join("config.json"), &device).unwrap();
    let hidden = decoder.hidden_size();
    let mut rng = SeededRng::new(1);
    let head = PrefixHead {
        mapping: vec![
            torch_linear(
                crate::models::transformer::linear(6, 8, true, &device),
                &mut rng,
            ),
            torch_linear(
                crate::models::transformer::linear(8, 3 * hidden, true, &device),
                &mut rng,
            ),
        ],
        transformer: None,
        decoder,
    };
    let x = Tensor::<2>::ones([2, 6], &device);
    assert_eq!(head.prefix(Flow::Pooled(x.clone())).dims(), [2, 3, hidden]);
    // PyTorch's Linear init: within +-1/sqrt(fan_in)
    let w = host(head.mapping[0].weight.val());
    assert!(w.iter().all(|v| v.abs() <= 1.0 / 6f32.sqrt()));
    assert!(w.iter().any(|v| v.abs() > 0.2));
    assert_eq!(
        head.prompt(head.prefix(Flow::Pooled(x)), &[5, 6]).dims(),
        [2, 5, hidden]
    );
}

/// A grid of cells: the MLP reads them flattened, the transformer mapper
/// as tokens; both make P positions of the language model's width.
#[test]
fn grid_features_become_a_prefix_through_either_mapper() {
    let device = Device::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tied");
    let decoder =
        crate::models::gpt2::Gpt2::from_config_file(&dir.join("config.json"), &device).unwrap();
    let hidden = decoder.hidden_size();
    let mut rng = SeededRng::new(3);
    let cells = grid_cells(2);
    assert_eq!((cells, grid_cells(0), grid_cells(1)), (4, 1, 1));
    let maps = Tensor::<4>::from_data(
        TensorData::new(
            (0..2 * 6 * 4)
                .map(|i| (i as f32 * 0.1).cos())
                .collect::<Vec<_>>(),
            [2, 6, 2, 2],
        ),
        &device,
    );
    let mlp = PrefixHead {
        mapping: vec![
            torch_linear(
                crate::models::transformer::linear(6 * cells, 8, true, &device),
                &mut rng,
            ),
            torch_linear(
                crate::models::transformer::linear(8, 3 * hidden, true, &device),
                &mut rng,
            ),
        ],
        transformer: None,
        decoder: decoder.clone(),
    };
    assert_eq!(mlp.prefix(Flow::Maps(maps.clone())).dims(), [2, 3, hidden]);
    let transformer = PrefixHead {
        mapping: vec![],
        transformer: Some(TransformerMapper::new(6, cells, 3, hidden, 1, &device).init(&mut rng)),
        decoder,
    };
    let prefix = transformer.prefix(Flow::Maps(maps.clone()));
    assert_eq!(prefix.dims(), [2, 3, hidden]);
    // each image's prefix is its own: the two images' differ
    let diff: f32 = (prefix.clone().narrow(0, 0, 1) - prefix.narrow(0, 1, 1))
        .abs()
        .max()
        .into_scalar();
    assert!(diff > 1e-4, "{diff}");
}

#[test]
fn a_frozen_or_lora_language_model_costs_input_gradients_only() {
    let device = Device::default();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tied");
    let body =
        crate::models::gpt2::Gpt2::from_config_file(&dir.join("config.json"), &device).unwrap();
    let mut c = core(vec![]);
    let task =
        |c: &CaptionCore| Captioning::<crate::models::gpt2::Gpt2>::new(c.clone(), (10.0, 100.0));
    assert_eq!(task(&c).head_flops(&body, 2), 220.0);
    assert_eq!(task(&c).head_backward_flops(&body, 2), 2.0 * (20.0 + 200.0));
    for s in [Strategy::Head, Strategy::Lora(None)] {
        c.state.decoder.strategy = s;
        assert_eq!(task(&c).head_backward_flops(&body, 2), 2.0 * (20.0 + 100.0));
    }
}

/// With `--mapper cross-attention` the language model is built with
/// cross-attention, and those new layers (and the LayerNorms before them)
/// train under every decoder strategy, the frozen ones included, while the
/// strategy still freezes the rest.
#[test]
fn a_cross_attending_language_model_trains_its_new_layers_whatever_the_strategy() {
    use burn::module::ModuleVisitor;
    struct Trainable(Vec<String>, Vec<(String, bool)>);
    impl ModuleVisitor for Trainable {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1
                .push((self.0.join("."), param.val().is_require_grad()));
        }
    }
    let device = Device::default().autodiff();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2/tied");
    let body =
        crate::models::gpt2::Gpt2::from_config_file(&dir.join("config.json"), &device).unwrap();
    let mut c = core(vec![94]);
    c.state.mapper = MapperKind::CrossAttention;
    c.state.prefix_length = 0;
    c.state.decoder.dir = dir;
    for strategy in [Strategy::Head, Strategy::Freeze(3), Strategy::Full] {
        c.state.decoder.strategy = strategy;
        let task = Captioning::<crate::models::gpt2::Gpt2>::new(c.clone(), (0.0, 0.0));
        let head = task.new_head(&body, &device);
        assert!(head.decoder.has_cross_attention());
        let head = task.head_trainable(head, 0);
        let mut seen = Trainable(Vec::new(), Vec::new());
        head.visit(&mut seen);
        let cross: Vec<_> = seen
            .1
            .iter()
            .filter(|(p, _)| is_cross_attention(p))
            .collect();
        assert_eq!(
            cross.len(),
            3 * 8,
            "{strategy}: 3 blocks x (LN 2 + q, kv, out 2 each)"
        );
        assert!(cross.iter().all(|(_, t)| *t), "{strategy}: {cross:?}");
        let wte = seen
            .1
            .iter()
            .find(|(p, _)| p.ends_with("wte.weight"))
            .unwrap();
        assert_eq!(wte.1, strategy == Strategy::Full, "{strategy}: {wte:?}");
    }
}
