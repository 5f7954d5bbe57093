//! Beam search against transformers' on the random GPT-2 fixture.

use serde::Deserialize;

use super::*;
use crate::generate::family_tests::fixture;
use crate::generate::{Sampling, generate};
use crate::models::gpt2::Gpt2;

#[derive(Deserialize)]
struct Reference {
    prefix: Prefix,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Prefix {
    shape: [usize; 3],
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    prompt: Option<Vec<u32>>,
    beams: usize,
    max_new: usize,
    length_penalty: f64,
    no_repeat_ngram_size: usize,
    eos: u32,
    new_tokens: Option<Vec<u32>>,
    new_tokens_per_row: Option<Vec<Vec<u32>>>,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gpt2/beam_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tokens up to and including the first `eos` (transformers pads
/// finished rows of a batch with it).
fn until_eos(tokens: &[u32], eos: u32) -> Vec<u32> {
    match tokens.iter().position(|&t| t == eos) {
        Some(i) => tokens[..=i].to_vec(),
        None => tokens.to_vec(),
    }
}

#[test]
fn beams_equal_transformers_on_prompts_and_prefixes() {
    let model: Gpt2 = fixture("tests/fixtures/gpt2/tied");
    let device = Device::default();
    let r = reference();
    let prefix = Tensor::<3>::from_data(
        TensorData::new(r.prefix.values.clone(), r.prefix.shape),
        &device,
    );
    let mut prompt_cases = 0;
    for c in &r.cases {
        let opts = BeamSearch {
            beams: c.beams,
            length_penalty: c.length_penalty,
            no_repeat_ngram: c.no_repeat_ngram_size,
        };
        match (&c.prompt, &c.new_tokens, &c.new_tokens_per_row) {
            (Some(p), Some(want), _) => {
                let got = beam_search(
                    &model,
                    Start::Prompts(std::slice::from_ref(p)),
                    c.max_new,
                    &opts,
                    &[c.eos],
                    &device,
                )
                .unwrap()
                .remove(0);
                assert_eq!(&got.ids, want, "prompt {p:?}, {opts:?}, eos {}", c.eos);
                let ended = want.last() == Some(&c.eos);
                assert_eq!(got.stop, if ended { Stop::Eos } else { Stop::Length });
                prompt_cases += 1;
            }
            (None, _, Some(rows)) => {
                let got = beam_search(
                    &model,
                    Start::Prefix(prefix.clone()),
                    c.max_new,
                    &opts,
                    &[c.eos],
                    &device,
                )
                .unwrap();
                for (g, want) in got.iter().zip(rows) {
                    assert_eq!(
                        g.ids,
                        until_eos(want, c.eos),
                        "prefix, {opts:?}, eos {}",
                        c.eos
                    );
                }
            }
            _ => panic!("a case without expected tokens"),
        }
    }
    assert_eq!(prompt_cases, 12);
}

#[test]
fn batched_prompts_decode_as_alone_and_one_beam_is_greedy() {
    let model: Gpt2 = fixture("tests/fixtures/gpt2/tied");
    let device = Device::default();
    let prompts = vec![vec![5, 9, 3, 7, 11, 2], vec![4, 8], vec![1, 30, 6, 30, 6]];
    let opts = BeamSearch {
        beams: 3,
        length_penalty: 1.0,
        no_repeat_ngram: 2,
    };
    let stop = [75];
    let batch = beam_search(&model, Start::Prompts(&prompts), 9, &opts, &stop, &device).unwrap();
    for (p, g) in prompts.iter().zip(&batch) {
        let alone = beam_search(
            &model,
            Start::Prompts(std::slice::from_ref(p)),
            9,
            &opts,
            &stop,
            &device,
        )
        .unwrap()
        .remove(0);
        assert_eq!(g, &alone, "prompt {p:?}");
    }
    let one = BeamSearch {
        beams: 1,
        length_penalty: 1.0,
        no_repeat_ngram: 0,
    };
    let beam1 = beam_search(&model, Start::Prompts(&prompts), 9, &one, &stop, &device).unwrap();
    let greedy = generate(&model, &prompts, 9, &Sampling::greedy(), &stop, &device).unwrap();
    assert_eq!(beam1, greedy);
}

#[test]
fn no_repeat_bans_the_token_that_would_repeat_an_ngram() {
    assert_eq!(banned(&[1, 2, 3, 1, 2], 3), vec![3]);
    assert_eq!(banned(&[1, 2, 1, 2, 1], 2), vec![2, 2]);
    assert!(banned(&[1], 3).is_empty());
    assert_eq!(banned(&[4, 5], 1), vec![4, 5]);
}

#[test]
fn bad_settings_and_starts_are_errors() {
    let model: Gpt2 = fixture("tests/fixtures/gpt2/tied");
    let device = Device::default();
    let zero = BeamSearch {
        beams: 0,
        ..BeamSearch::default()
    };
    assert!(zero.check().unwrap_err().to_string().contains("--beams"));
    let e = beam_search(
        &model,
        Start::Prompts(&[vec![]]),
        4,
        &BeamSearch::default(),
        &[],
        &device,
    )
    .unwrap_err();
    assert!(e.to_string().contains("prompt 1 is empty"), "{e}");
    let e = beam_search(
        &model,
        Start::Prompts(&[vec![1; 60]]),
        8,
        &BeamSearch::default(),
        &[],
        &device,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("exceeds the model's context of 64"),
        "{e}"
    );
}
