//! The metrics against pycocoevalcap's on the committed fixture.

use super::*;

#[derive(Deserialize)]
struct Fixture {
    tokens: HashMap<String, String>,
    images: Vec<FixtureImage>,
    scores: HashMap<String, f64>,
    per_image: HashMap<String, Vec<f64>>,
}

#[derive(Deserialize)]
struct FixtureImage {
    references: Vec<String>,
    hypothesis: String,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/captions/coco_eval_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

#[test]
fn tokens_match_stanfords_ptb_tokenizer() {
    let f = fixture();
    assert!(f.tokens.len() > 50);
    for (raw, want) in &f.tokens {
        assert_eq!(&super::super::ptb::tokenize(raw), want, "{raw:?}");
    }
}

#[test]
fn scores_match_the_coco_caption_evaluation() {
    let f = fixture();
    let refs: Vec<Vec<String>> = f.images.iter().map(|i| i.references.clone()).collect();
    let hyps: Vec<String> = f.images.iter().map(|i| i.hypothesis.clone()).collect();
    let s = score(&refs, &hyps).unwrap();
    let close = |name: &str, ours: f64, theirs: f64| {
        assert!(
            (ours - theirs).abs() <= 1e-9,
            "{name}: ours {ours}, pycocoevalcap {theirs}"
        );
    };
    for k in 0..4 {
        let name = format!("Bleu_{}", k + 1);
        close(&name, s.bleu[k], f.scores[&name]);
        for (i, img) in s.per_image.iter().enumerate() {
            close(
                &format!("{name} image {i}"),
                img.bleu[k],
                f.per_image[&name][i],
            );
        }
    }
    close("ROUGE_L", s.rouge_l, f.scores["ROUGE_L"]);
    close("CIDEr", s.cider_d, f.scores["CIDEr"]);
    for (i, img) in s.per_image.iter().enumerate() {
        close(
            &format!("ROUGE_L image {i}"),
            img.rouge_l,
            f.per_image["ROUGE_L"][i],
        );
        close(
            &format!("CIDEr image {i}"),
            img.cider_d,
            f.per_image["CIDEr"][i],
        );
    }
    // the fixture spans weak and exact matches
    let cider: Vec<f64> = s.per_image.iter().map(|i| i.cider_d).collect();
    assert!(cider.iter().any(|&c| c < 1.0) && cider.iter().any(|&c| c > 5.0));
}

#[test]
fn a_caption_equal_to_its_only_reference_scores_full_bleu_and_rouge() {
    let refs = vec![
        vec!["A sneaker to the left of a handbag.".to_string()],
        vec!["Two shirts above a coat.".to_string()],
    ];
    let hyps = vec![
        "a sneaker to the left of a handbag".to_string(),
        "two shirts above a coat".to_string(),
    ];
    let s = score(&refs, &hyps).unwrap();
    for b in s.bleu {
        assert!((b - 1.0).abs() < 1e-9, "{b}");
    }
    assert!((s.rouge_l - 1.0).abs() < 1e-12);
    // two images: every n-gram's idf is ln 2 - ln 1 > 0, so CIDEr-D is 10
    assert!((s.cider_d - 10.0).abs() < 1e-9, "{}", s.cider_d);
    let worse = score(&refs, &["a handbag".to_string(), "a coat".to_string()]).unwrap();
    assert!(worse.bleu[0] < 0.5 && worse.cider_d < s.cider_d);
}

#[test]
fn mismatched_or_missing_references_are_errors() {
    let err = score(&[vec!["a".into()]], &[]).unwrap_err();
    assert!(
        err.to_string().contains("1 images have references but 0"),
        "{err}"
    );
    let err = score(&[vec![]], &["a bag".into()]).unwrap_err();
    assert!(
        err.to_string().contains("image 0 has no reference"),
        "{err}"
    );
}
