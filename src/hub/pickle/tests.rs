use super::vm::Unpickler;
use super::*;
use std::io::Write;

use super::super::tensor::DType;

/// Builds pickles opcode by opcode, the way torch.save (protocol 2) does.
#[derive(Default)]
pub(crate) struct P(pub(crate) Vec<u8>);

impl P {
    pub(crate) fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn s(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    pub(crate) fn global(&mut self, m: &str, n: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{m}\n{n}\n").as_bytes());
        self
    }
    pub(crate) fn int(&mut self, i: u8) -> &mut Self {
        self.op(&[b'K', i])
    }
    pub(crate) fn tuple_of(&mut self, xs: &[u8]) -> &mut Self {
        self.op(b"(");
        for &x in xs {
            self.int(x);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', torch.<ty>, key, 'cpu', numel), off, size, stride, False, OrderedDict())`
    pub(crate) fn tensor(
        &mut self,
        ty: &str,
        key: &str,
        numel: u8,
        off: u8,
        size: &[u8],
        stride: &[u8],
    ) -> &mut Self {
        self.tensor_with(ty, key, numel, None, off, size, stride)
    }

    /// [`P::tensor`] with the legacy six-item persistent id: `view` is
    /// `Some(None)` for a whole storage, `Some(Some((view_key, offset,
    /// numel)))` for a storage view.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tensor_with(
        &mut self,
        ty: &str,
        key: &str,
        numel: u8,
        view: Option<Option<(&str, u8, u8)>>,
        off: u8,
        size: &[u8],
        stride: &[u8],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        self.op(b"(")
            .s("storage")
            .global("torch", ty)
            .s(key)
            .s("cpu")
            .int(numel);
        match view {
            None => {}
            Some(None) => {
                self.op(b"N");
            }
            Some(Some((view_key, offset, n))) => {
                self.s(view_key).int(offset).int(n).op(&[0x87]);
            }
        }
        self.op(b"tQ");
        self.int(off).tuple_of(size).tuple_of(stride).op(&[0x89]);
        self.global("collections", "OrderedDict").op(b")R");
        self.op(b"tR")
    }
}

/// A legacy torch.save file: magic number, protocol version, sys_info, the
/// `object` pickle, the list of storage keys, then per storage its element
/// count and raw bytes (`storages`: key, count, bytes), in the byte order
/// `little_endian` says.
pub(crate) fn legacy_bytes(
    object: &[u8],
    storages: &[(&str, u64, Vec<u8>)],
    little_endian: bool,
) -> Vec<u8> {
    let mut out = vec![
        0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.',
    ];
    out.extend([0x80, 2, b'M', 0xe9, 0x03, b'.']);
    let mut sys = P::default();
    sys.op(&[0x80, 2, b'}', b'('])
        .s("protocol_version")
        .op(&[b'M', 0xe9, 0x03])
        .s("little_endian")
        .op(&[if little_endian { 0x88 } else { 0x89 }])
        .s("type_sizes")
        .op(b"}(")
        .s("short")
        .int(2)
        .s("int")
        .int(4)
        .s("long")
        .int(4)
        .op(b"uu.");
    out.extend(&sys.0);
    out.extend(object);
    let mut keys = P::default();
    keys.op(&[0x80, 2, b']', b'(']);
    for (k, _, _) in storages {
        keys.s(k);
    }
    keys.op(b"e.");
    out.extend(&keys.0);
    for (_, count, bytes) in storages {
        out.extend(if little_endian {
            count.to_le_bytes()
        } else {
            count.to_be_bytes()
        });
        out.extend(bytes);
    }
    out
}

pub(crate) fn zip_file(dir: &Path, members: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    zip_file_named(dir, "pytorch_model.bin", members)
}

pub(crate) fn zip_file_named(
    dir: &Path,
    name: &str,
    members: &[(&str, Vec<u8>)],
) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
    path
}

pub(crate) fn le<T: Copy, const N: usize>(xs: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    xs.iter().flat_map(|&x| f(x)).collect()
}

/// A state_dict like torch.save writes: OrderedDict, memoised globals,
/// a parameter, a half tensor, an int64 buffer and a transposed view
/// sharing the first storage at an offset.
fn sample_pickle() -> Vec<u8> {
    let mut p = P::default();
    p.op(&[0x80, 2])
        .global("collections", "OrderedDict")
        .op(b"q\x00)Rq\x01(");
    p.s("a.weight")
        .global("torch._utils", "_rebuild_parameter")
        .op(b"(");
    p.tensor("FloatStorage", "0", 8, 0, &[2, 3], &[3, 1]);
    p.op(&[0x88])
        .global("collections", "OrderedDict")
        .op(b")RtR");
    p.s("b.bias").tensor("HalfStorage", "1", 2, 0, &[2], &[1]);
    p.s("c").tensor("LongStorage", "2", 3, 0, &[3], &[1]);
    // (3, 2) transposed view of storage 0 starting at element 1
    p.s("t").tensor("FloatStorage", "0", 8, 1, &[3, 2], &[1, 3]);
    p.s("scalar").tensor("FloatStorage", "0", 8, 7, &[], &[]);
    p.op(b"u");
    // BUILD with the OrderedDict's _metadata, via BINGET of a memoised global
    p.op(b"}").s("_metadata").op(b"h\x00)R").op(b"sb.");
    p.0
}

#[test]
fn reads_hand_built_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let storage0 = le(&[0f32, 1., 2., 3., 4., 5., 6., 7.], f32::to_le_bytes);
    let storage1 = le(
        &[half::f16::from_f32(1.5), half::f16::from_f32(-2.0)],
        half::f16::to_le_bytes,
    );
    let storage2 = le(&[0i64, 1, 2], i64::to_le_bytes);
    let path = zip_file(
        dir.path(),
        &[
            ("archive/data.pkl", sample_pickle()),
            ("archive/byteorder", b"little".to_vec()),
            ("archive/data/0", storage0),
            ("archive/data/1", storage1),
            ("archive/data/2", storage2),
            ("archive/version", b"3\n".to_vec()),
        ],
    );
    let t = read_pytorch_bin(&path).unwrap();
    assert_eq!(t.len(), 5);
    assert_eq!(t["a.weight"].shape, vec![2, 3]);
    assert_eq!(t["a.weight"].dtype, DType::F32);
    assert_eq!(t["a.weight"].data, vec![0., 1., 2., 3., 4., 5.]);
    assert_eq!(t["b.bias"].dtype, DType::F16);
    assert_eq!(t["b.bias"].data, vec![1.5, -2.0]);
    assert_eq!(t["c"].dtype, DType::I64);
    assert_eq!(t["c"].data, vec![0., 1., 2.]);
    // t[i][j] = storage[1 + i + 3j]
    assert_eq!(t["t"].shape, vec![3, 2]);
    assert_eq!(t["t"].data, vec![1., 4., 2., 5., 3., 6.]);
    assert_eq!(t["scalar"].shape, Vec::<usize>::new());
    assert_eq!(t["scalar"].data, vec![7.]);
}

#[test]
fn big_endian_storages_are_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'('])
        .s("w")
        .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .op(b"u.");
    let path = zip_file(
        dir.path(),
        &[
            ("m/data.pkl", p.0),
            ("m/byteorder", b"big".to_vec()),
            ("m/data/0", le(&[0.5f32, -8.0], f32::to_be_bytes)),
        ],
    );
    assert_eq!(read_pytorch_bin(&path).unwrap()["w"].data, vec![0.5, -8.0]);
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let storage0 = le(&[0f32; 8], f32::to_le_bytes);

    // an opcode the VM does not know (INST, 'i')
    let mut p = P::default();
    p.op(&[0x80, 2]).op(b"i");
    let path = zip_file(dir.path(), &[("a/data.pkl", p.0)]);
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("opcode 0x69 ('i')") && err.contains("pytorch_model.bin"),
        "{err}"
    );

    // the pickle stops half way
    let mut pk = sample_pickle();
    pk.truncate(pk.len() / 2);
    let path = zip_file(dir.path(), &[("a/data.pkl", pk)]);
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("corrupt") && err.contains("a/data.pkl"),
        "{err}"
    );

    // a view past the end of its storage
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'('])
        .s("w")
        .tensor("FloatStorage", "0", 8, 4, &[2, 3], &[3, 1])
        .op(b"u.");
    let path = zip_file(
        dir.path(),
        &[("a/data.pkl", p.0), ("a/data/0", storage0.clone())],
    );
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(err.contains("`w`") && err.contains("past the end"), "{err}");

    // a storage member that is missing or short
    let path = zip_file(
        dir.path(),
        &[
            ("a/data.pkl", sample_pickle()),
            ("a/data/0", storage0[..8].to_vec()),
        ],
    );
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("a/data/0") && err.contains("truncated or corrupt"),
        "{err}"
    );
    let path = zip_file(dir.path(), &[("a/data.pkl", sample_pickle())]);
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(err.contains("lacks archive member a/data/0"), "{err}");

    // an unsupported storage type
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'('])
        .s("w")
        .tensor("ComplexFloatStorage", "0", 1, 0, &[1], &[1])
        .op(b"u.");
    let path = zip_file(dir.path(), &[("a/data.pkl", p.0)]);
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(err.contains("torch.ComplexFloatStorage"), "{err}");

    // not a state_dict
    let path = zip_file(dir.path(), &[("a/data.pkl", vec![0x80, 2, b'K', 3, b'.'])]);
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("holds a value of type int, not a state_dict"),
        "{err}"
    );

    // a dict without tensors lists what it holds
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'('])
        .s("epoch")
        .int(3)
        .s("lr")
        .op(b"G")
        .op(&0.25f64.to_be_bytes());
    p.op(b"u.");
    let path = zip_file(dir.path(), &[("a/data.pkl", p.0)]);
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("dict without tensors (epoch: 3, lr: 0.25)"),
        "{err}"
    );

    // a zip without data.pkl, a legacy pickle, garbage, an LFS pointer
    let path = zip_file(dir.path(), &[("readme.txt", b"hi".to_vec())]);
    assert!(
        read_pytorch_bin(&path)
            .unwrap_err()
            .to_string()
            .contains("no <name>/data.pkl")
    );
    // the start of a legacy file, cut inside the magic number
    std::fs::write(&path, [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(err.contains("not a file written by torch.save"), "{err}");
    std::fs::write(&path, b"<html>").unwrap();
    assert!(
        read_pytorch_bin(&path)
            .unwrap_err()
            .to_string()
            .contains("not a PyTorch checkpoint")
    );
    std::fs::write(&path, b"version https://git-lfs.github.com/spec/v1\n").unwrap();
    assert!(
        read_pytorch_bin(&path)
            .unwrap_err()
            .to_string()
            .contains("Git LFS pointer")
    );
    // a zip cut short
    let good = zip_file(
        dir.path(),
        &[("a/data.pkl", sample_pickle()), ("a/data/0", storage0)],
    );
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&good, &bytes[..bytes.len() - 30]).unwrap();
    let err = read_pytorch_bin(&good).unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
}

#[test]
fn vm_handles_memo_longs_and_wrappers() {
    let mut p = P::default();
    // {"state_dict": {"w": tensor}, "epoch": LONG1(-2), "lr": 0.5}
    p.op(&[0x80, 2, b'}', 0x94, b'(']);
    p.op(&[0x8c, 5]).op(b"epoch").op(&[0x8a, 1, 0xFE]);
    p.s("lr").op(b"G").op(&0.5f64.to_be_bytes());
    p.s("state_dict").op(b"}").op(&[b'r', 9, 0, 0, 0]).s("w");
    p.tensor("IntStorage", "k", 2, 0, &[2], &[1]).op(b"s");
    p.op(b"u.");
    let top = Unpickler::new(&p.0, "test").run().unwrap();
    let Value::Dict(d) = &top else {
        panic!("not a dict")
    };
    assert_eq!(d.borrow()[0].1.describe(), "-2");
    assert_eq!(d.borrow()[1].1.describe(), "0.5");
    let mut notes = Vec::new();
    let entries = state_dict_entries(&top, "test", &mut notes).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "w");
    assert_eq!(entries[0].1.storage.dtype, DType::I32);
    assert_eq!(
        notes,
        ["took the tensors from the `state_dict` entry of a dict (also held: epoch, lr)"]
    );
}

/// A legacy state_dict: a weight and its transposed view on one storage, a
/// half bias, and a tensor on a storage *view* (the pre-0.4 layout), with
/// the storages listed in another order than the pickle uses them.
fn legacy_object() -> Vec<u8> {
    let mut p = P::default();
    p.op(&[0x80, 2])
        .global("collections", "OrderedDict")
        .op(b")R(");
    p.s("w")
        .tensor_with("FloatStorage", "s1", 6, Some(None), 0, &[2, 3], &[3, 1]);
    p.s("w_t")
        .tensor_with("FloatStorage", "s1", 6, Some(None), 0, &[3, 2], &[1, 3]);
    p.s("b")
        .tensor_with("HalfStorage", "s2", 2, Some(None), 0, &[2], &[1]);
    // elements 2..5 of storage s3 through the view s3v, then offset 1 in it
    p.s("v").tensor_with(
        "DoubleStorage",
        "s3",
        6,
        Some(Some(("s3v", 2, 3))),
        1,
        &[2],
        &[1],
    );
    p.op(b"u.");
    p.0
}

fn legacy_storages(little: bool) -> Vec<(&'static str, u64, Vec<u8>)> {
    let f32s = if little {
        le(&[0f32, 1., 2., 3., 4., 5.], f32::to_le_bytes)
    } else {
        le(&[0f32, 1., 2., 3., 4., 5.], f32::to_be_bytes)
    };
    let halves = [half::f16::from_f32(1.5), half::f16::from_f32(-2.0)];
    let f16s = if little {
        le(&halves, half::f16::to_le_bytes)
    } else {
        le(&halves, half::f16::to_be_bytes)
    };
    let doubles = [10f64, 11., 12., 13., 14., 15.];
    let f64s = if little {
        le(&doubles, f64::to_le_bytes)
    } else {
        le(&doubles, f64::to_be_bytes)
    };
    vec![("s2", 2, f16s), ("s3", 6, f64s), ("s1", 6, f32s)]
}

#[test]
fn reads_legacy_state_dict_in_both_byte_orders() {
    let dir = tempfile::tempdir().unwrap();
    for little in [true, false] {
        let path = dir.path().join("legacy.pth");
        std::fs::write(
            &path,
            legacy_bytes(&legacy_object(), &legacy_storages(little), little),
        )
        .unwrap();
        let file = read_torch_file(&path).unwrap();
        let t = &file.tensors;
        assert_eq!(t.len(), 4);
        assert_eq!(t["w"].data, vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(t["w_t"].shape, vec![3, 2]);
        assert_eq!(t["w_t"].data, vec![0., 3., 1., 4., 2., 5.]);
        assert_eq!(t["b"].dtype, DType::F16);
        assert_eq!(t["b"].data, vec![1.5, -2.0]);
        // view s3v = s3[2..5], tensor offset 1 in it: s3[3], s3[4]
        assert_eq!(t["v"].dtype, DType::F64);
        assert_eq!(t["v"].data, vec![13., 14.]);
        assert_eq!(file.notes, ["legacy torch.save format (torch < 1.6)"]);
    }
}

#[test]
fn legacy_wrappers_and_unknown_objects_are_noted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.pth");
    // {"args": argparse.Namespace(lr=0.1), "state_dict": {"w": tensor}, "epoch": 3}
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'(']).s("args");
    p.global("argparse", "Namespace")
        .op(b")")
        .op(&[0x81])
        .op(b"}")
        .s("lr")
        .op(b"G")
        .op(&0.1f64.to_be_bytes())
        .op(b"sb");
    p.s("state_dict").op(b"}(").s("w");
    p.tensor_with("FloatStorage", "k", 2, Some(None), 0, &[2], &[1]);
    p.op(b"u").s("epoch").int(3).op(b"u.");
    let storages = [("k", 2u64, le(&[7f32, 8.], f32::to_le_bytes))];
    std::fs::write(&path, legacy_bytes(&p.0, &storages, true)).unwrap();
    let file = read_torch_file(&path).unwrap();
    assert_eq!(file.tensors["w"].data, vec![7., 8.]);
    assert_eq!(
        file.notes,
        [
            "legacy torch.save format (torch < 1.6)",
            "took the tensors from the `state_dict` entry of a dict (also held: args, epoch)",
            "ignored objects of classes headstart does not import: argparse.Namespace",
        ]
    );

    // Without a state_dict the error names the unknown class.
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'(']).s("net");
    p.global("mylib.models", "Net").op(b")").op(&[0x81]);
    p.op(b"u.");
    std::fs::write(&path, legacy_bytes(&p.0, &[], true)).unwrap();
    let err = format!("{:#}", read_torch_file(&path).unwrap_err());
    assert!(
        err.contains("classes headstart does not know and does not import: mylib.models.Net")
            && err.contains("dict without tensors"),
        "{err}"
    );
}

#[test]
fn bad_legacy_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.pth");
    let good = legacy_bytes(&legacy_object(), &legacy_storages(true), true);
    let err_of = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        format!("{:#}", read_torch_file(&path).unwrap_err())
    };

    // cut inside the last storage
    let err = err_of(&good[..good.len() - 3]);
    assert!(
        err.contains("truncated") && err.contains("storage s1"),
        "{err}"
    );

    // an element count that disagrees with the pickle
    let mut storages = legacy_storages(true);
    storages[0].1 = 3;
    let err = err_of(&legacy_bytes(&legacy_object(), &storages, true));
    assert!(
        err.contains("storage s2 holds 3 elements on disk but 2"),
        "{err}"
    );

    // a listed storage no tensor uses
    let mut storages = legacy_storages(true);
    storages.push(("ghost", 1, vec![0; 4]));
    let err = err_of(&legacy_bytes(&legacy_object(), &storages, true));
    assert!(
        err.contains("storage ghost is listed but never used"),
        "{err}"
    );

    // a storage view outside its storage
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'(']).s("v").tensor_with(
        "FloatStorage",
        "s",
        4,
        Some(Some(("sv", 3, 2))),
        0,
        &[2],
        &[1],
    );
    p.op(b"u.");
    let err = err_of(&legacy_bytes(&p.0, &[], true));
    assert!(err.contains("lies outside its storage"), "{err}");

    // a plain pickle, not torch.save
    let err = err_of(&[0x80, 2, b'K', 1, b'.']);
    assert!(err.contains("not a file written by torch.save"), "{err}");

    // another protocol version
    let mut other = good.clone();
    other[18] = 0xea;
    let err = err_of(&other);
    assert!(err.contains("protocol version 1002"), "{err}");

    // a quantized tensor: refused by name, never silently dropped
    let mut p = P::default();
    p.op(&[0x80, 2, b'}', b'(']).s("q");
    p.global("torch._utils", "_rebuild_qtensor").op(b"(K\x01tR");
    p.op(b"u.");
    let err = err_of(&legacy_bytes(&p.0, &[], true));
    assert!(err.contains("torch._utils._rebuild_qtensor"), "{err}");

    // a whole pickled module (torch.save(model))
    let mut p = P::default();
    p.op(&[0x80, 2, b'(']).s("module");
    p.global("mylib", "Net").s("net.py").s("source").op(b"tQ.");
    let err = err_of(&legacy_bytes(&p.0, &[], true));
    assert!(
        err.contains("whole pickled nn.Module") && err.contains("state_dict()"),
        "{err}"
    );
}

/// `data.pkl` of a TorchScript archive: `__torch__.Net` with a child
/// `Linear` module, a float, an int list and a tensor attribute.
fn torchscript_pickle() -> Vec<u8> {
    let mut p = P::default();
    p.op(&[0x80, 2])
        .global("__torch__", "Net")
        .op(b")")
        .op(&[0x81]);
    p.op(b"}(").s("training").op(&[0x88]);
    p.s("head")
        .global("__torch__.torch.nn.modules.linear", "Linear")
        .op(b")")
        .op(&[0x81]);
    p.op(b"}(").s("weight");
    p.tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1]);
    p.s("bias").tensor("FloatStorage", "1", 2, 0, &[2], &[1]);
    p.s("training").op(&[0x89]);
    p.op(b"ub");
    p.s("kernel")
        .global("torch.jit._pickle", "build_intlist")
        .op(b"(](")
        .int(1)
        .int(1)
        .op(b"etR");
    p.s("scale").op(b"G").op(&0.5f64.to_be_bytes());
    p.s("offsets").tensor("LongStorage", "2", 3, 0, &[3], &[1]);
    p.op(b"ub.");
    p.0
}

#[test]
fn reads_torchscript_module_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = zip_file_named(
        dir.path(),
        "scripted.pt",
        &[
            ("net/data.pkl", torchscript_pickle()),
            ("net/constants.pkl", vec![0x80, 2, b')', b'.']),
            ("net/code/__torch__.py", b"class Net(Module): ...".to_vec()),
            (
                "net/data/0",
                le(&[1f32, 2., 3., 4., 5., 6.], f32::to_le_bytes),
            ),
            ("net/data/1", le(&[-1f32, -2.], f32::to_le_bytes)),
            ("net/data/2", le(&[7i64, 8, 9], i64::to_le_bytes)),
            ("net/version", b"3\n".to_vec()),
        ],
    );
    let file = read_torch_file(&path).unwrap();
    let keys: Vec<&str> = file.tensors.keys().map(String::as_str).collect();
    assert_eq!(keys, ["head.bias", "head.weight", "offsets"]);
    assert_eq!(file.tensors["head.weight"].shape, vec![2, 3]);
    assert_eq!(file.tensors["head.bias"].data, vec![-1., -2.]);
    assert_eq!(file.tensors["offsets"].dtype, DType::I64);
    assert_eq!(file.tensors["offsets"].data, vec![7., 8., 9.]);
    assert_eq!(
        file.notes,
        [
            "TorchScript archive (torch.jit.save), module `net/`",
            "flattened the TorchScript module tree (top class Net) into 3 parameters and buffers",
        ]
    );

    // A module tree without tensors.
    let mut p = P::default();
    p.op(&[0x80, 2])
        .global("__torch__", "Empty")
        .op(b")")
        .op(&[0x81]);
    p.op(b"}(").s("training").op(&[0x88]).op(b"ub.");
    let path = zip_file_named(dir.path(), "empty.pt", &[("e/data.pkl", p.0)]);
    let err = read_torch_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("TorchScript module (Empty) without parameters or buffers"),
        "{err}"
    );
}

/// `pickle.dump(array)` (protocol 2 style: globals by `c`): an array of
/// `shape` with dtype `descr`/`order`, raw `data`, `fortran` flag.
fn numpy_pickle(shape: &[u8], descr: &str, order: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
    let mut p = P::default();
    p.op(&[0x80, 2])
        .global("numpy.core.multiarray", "_reconstruct")
        .global("numpy", "ndarray")
        .int(0)
        .op(&[0x85, b'C', 1, b'b', 0x87, b'R', 0x94]);
    p.op(b"(").int(1).tuple_of(shape);
    p.global("numpy", "dtype")
        .op(b"(")
        .s(descr)
        .op(&[0x89, 0x88])
        .op(b"tR");
    p.op(b"(").int(3).s(order).op(b"NNN");
    p.op(b"J").op(&(-1i32).to_le_bytes()).op(b"J");
    p.op(&(-1i32).to_le_bytes()).int(0).op(b"tb");
    p.op(&[if fortran { 0x88 } else { 0x89 }, b'B'])
        .op(&(data.len() as u32).to_le_bytes())
        .op(data);
    p.op(b"tb.");
    p.0
}

#[test]
fn reads_numpy_arrays_without_running_anything() {
    let values = [1i16, -2, 300, -32768, 0, 7];
    let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let a = read_numpy_pickle(&numpy_pickle(&[2, 3], "i2", ">", false, &be), "t").unwrap();
    assert_eq!(a.shape, [2, 3]);
    assert_eq!((a.dtype, a.big_endian, a.numel()), (DType::I16, true, 6));
    assert_eq!(a.to_i64().unwrap(), values.map(i64::from));
    assert_eq!(a.to_f32().unwrap(), values.map(f32::from));

    let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
    let a = read_numpy_pickle(&numpy_pickle(&[3, 2, 2], "u1", "|", false, &pixels), "t").unwrap();
    assert_eq!((a.dtype, a.data.clone()), (DType::U8, pixels));

    let labels: Vec<u8> = [9i64, 0, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = read_numpy_pickle(&numpy_pickle(&[3], "i8", "<", false, &labels), "t").unwrap();
    assert_eq!(a.to_i64().unwrap(), [9, 0, -1]);
    let f = read_numpy_pickle(
        &numpy_pickle(&[1], "f4", "<", false, &1.5f32.to_le_bytes()),
        "t",
    )
    .unwrap();
    assert!(f.to_i64().is_err());
}

#[test]
fn rejects_numpy_arrays_it_cannot_read() {
    let err = |p: Vec<u8>| read_numpy_pickle(&p, "arr.pkl").unwrap_err().to_string();
    let e = err(numpy_pickle(&[2], "u1", "|", true, &[1, 2]));
    assert!(e.contains("arr.pkl") && e.contains("Fortran"), "{e}");
    let e = err(numpy_pickle(&[2, 2], "u1", "|", false, &[1, 2, 3]));
    assert!(e.contains("holds 3 bytes, not 4"), "{e}");
    let e = err(numpy_pickle(&[1], "U5", "<", false, &[0; 20]));
    assert!(e.contains("\"U5\""), "{e}");
    // A callable that is not numpy's stays an inert object: never run.
    let mut p = P::default();
    p.op(&[0x80, 2])
        .global("os", "system")
        .op(b"(")
        .s("true")
        .op(b"tR.");
    let e = err(p.0);
    assert!(e.contains("os.system object, not a numpy array"), "{e}");
}
