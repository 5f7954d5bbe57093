//! Reads a real `torch.save` checkpoint (tests/fixtures/hub/tiny_pytorch_model.bin,
//! written by scripts/make_pickle_fixture.py with torch 2.15.0) and checks every value.

use std::path::Path;

use headstart::hub::{Checkpoint, DType, read_pytorch_bin};

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hub/tiny_pytorch_model.bin"
    ))
}

#[test]
fn torch_saved_state_dict_values() {
    let t = read_pytorch_bin(fixture()).unwrap();
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "a.weight",
            "b.bias",
            "c",
            "d.transposed",
            "e.offset_view",
            "f.bf16",
            "g.param"
        ]
    );

    assert_eq!(t["a.weight"].dtype, DType::F32);
    assert_eq!(t["a.weight"].shape, vec![2, 3]);
    assert_eq!(t["a.weight"].data, vec![0., 1., 2., 3., 4., 5.]);

    assert_eq!(t["b.bias"].dtype, DType::F16);
    assert_eq!(t["b.bias"].shape, vec![2]);
    assert_eq!(t["b.bias"].data, vec![1.5, -2.0]);

    assert_eq!(t["c"].dtype, DType::I64);
    assert_eq!(t["c"].data, vec![0., 1., 2.]);

    // a.weight.t(): shares a.weight's storage, stride (1, 3)
    assert_eq!(t["d.transposed"].shape, vec![3, 2]);
    assert_eq!(t["d.transposed"].data, vec![0., 3., 1., 4., 2., 5.]);

    // arange(12).reshape(3, 4)[1:, 1:].t(): storage offset 5, stride (1, 4)
    assert_eq!(t["e.offset_view"].shape, vec![3, 2]);
    assert_eq!(t["e.offset_view"].data, vec![5., 9., 6., 10., 7., 11.]);

    assert_eq!(t["f.bf16"].dtype, DType::BF16);
    assert_eq!(t["f.bf16"].data, vec![0.5, -1.25, 3.0]);

    // nn.Parameter goes through torch._utils._rebuild_parameter
    assert_eq!(t["g.param"].shape, vec![1, 2]);
    assert_eq!(t["g.param"].data, vec![1.0, 2.0]);
}

#[test]
fn checkpoint_load_falls_back_to_pytorch_bin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(), dir.path().join("pytorch_model.bin")).unwrap();
    let ck = Checkpoint::load(dir.path()).unwrap();
    assert_eq!(ck.files, vec![dir.path().join("pytorch_model.bin")]);
    assert_eq!(ck.tensors.len(), 7);
    // floating tensors: 6 + 2 + 6 + 6 + 3 + 2 (c is int64)
    assert_eq!(ck.num_params(), 25);
    assert_eq!(
        ck.dtype_summary(),
        "BF16 (1 tensor), F16 (1 tensor), F32 (4 tensors), I64 (1 tensor)"
    );
}

#[test]
fn truncated_pytorch_bin_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture()).unwrap();
    let path = dir.path().join("pytorch_model.bin");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("truncated or corrupt") && err.contains("re-download"),
        "{err}"
    );
}
