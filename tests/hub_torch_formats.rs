//! Bare weight files written by real torch (tests/fixtures/hub/tiny_legacy.pth
//! and tiny_torchscript.pt, made by scripts/make_torch_format_fixtures.py with
//! torch 2.15.0): every tensor, shape, dtype and value must match what torch
//! itself reported (tests/fixtures/hub/torch_formats_expected.json).

use std::path::{Path, PathBuf};

use headstart::hub::{Checkpoint, DType};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hub")
        .join(name)
}

fn dtype(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" => DType::F64,
        "int64" => DType::I64,
        other => panic!("unexpected dtype {other}"),
    }
}

/// Checks `ck` against the fixture's entry in the expected JSON.
fn matches_torch(ck: &Checkpoint, file: &str) {
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("torch_formats_expected.json")).unwrap())
            .unwrap();
    let expected = expected[file].as_object().unwrap();
    let mut want: Vec<&str> = expected.keys().map(String::as_str).collect();
    want.sort();
    let got: Vec<&str> = ck.tensors.keys().map(String::as_str).collect();
    assert_eq!(got, want, "{file}: tensor names");
    for (name, e) in expected {
        let t = &ck.tensors[name];
        assert_eq!(
            t.dtype,
            dtype(e["dtype"].as_str().unwrap()),
            "{file} {name}"
        );
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{file} {name}");
        let values: Vec<f32> = e["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(t.data, values, "{file} {name}");
    }
}

#[test]
fn legacy_torch_save_file() {
    let path = fixture("tiny_legacy.pth");
    let ck = Checkpoint::load_file(&path).unwrap();
    matches_torch(&ck, "tiny_legacy.pth");
    assert_eq!(ck.files, vec![path]);
    assert_eq!(
        ck.notes,
        [
            "legacy torch.save format (torch < 1.6)",
            "took the tensors from the `model_state_dict` entry of a dict (also held: epoch)",
            "stripped the DataParallel prefix `module.` from all 9 keys",
        ]
    );
    // the channels-last weight comes out in logical (row-major) order
    assert_eq!(
        ck.tensors["i.conv"].data,
        (0..24).map(|v| v as f32).collect::<Vec<_>>()
    );
}

#[test]
fn torchscript_archive() {
    let ck = Checkpoint::load_file(&fixture("tiny_torchscript.pt")).unwrap();
    matches_torch(&ck, "tiny_torchscript.pt");
    assert_eq!(ck.notes.len(), 2, "{:?}", ck.notes);
    assert!(
        ck.notes[0].starts_with("TorchScript archive"),
        "{:?}",
        ck.notes
    );
    assert!(
        ck.notes[1].contains("(top class Net) into 9 parameters and buffers"),
        "{:?}",
        ck.notes
    );
}
