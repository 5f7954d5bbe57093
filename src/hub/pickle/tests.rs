use super::*;
use std::io::Write;

use super::super::tensor::DType;

/// Builds pickles opcode by opcode, the way torch.save (protocol 2) does.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn s(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
        self
    }
    fn global(&mut self, m: &str, n: &str) -> &mut Self {
        self.0.push(b'c');
        self.0.extend(format!("{m}\n{n}\n").as_bytes());
        self
    }
    fn int(&mut self, i: u8) -> &mut Self {
        self.op(&[b'K', i])
    }
    fn tuple_of(&mut self, xs: &[u8]) -> &mut Self {
        self.op(b"(");
        for &x in xs {
            self.int(x);
        }
        self.op(b"t")
    }
    /// `_rebuild_tensor_v2(('storage', torch.<ty>, key, 'cpu', numel), off, size, stride, False, OrderedDict())`
    fn tensor(
        &mut self,
        ty: &str,
        key: &str,
        numel: u8,
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
            .int(numel)
            .op(b"tQ");
        self.int(off).tuple_of(size).tuple_of(stride).op(&[0x89]);
        self.global("collections", "OrderedDict").op(b")R");
        self.op(b"tR")
    }
}

fn zip_file(dir: &Path, members: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let path = dir.join("pytorch_model.bin");
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

fn le<T: Copy, const N: usize>(xs: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
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
    std::fs::write(&path, [0x80, 2, 0x8a, 0x0a, 0x6c, 0xfc]).unwrap();
    let err = read_pytorch_bin(&path).unwrap_err().to_string();
    assert!(
        err.contains("legacy PyTorch format (torch < 1.6) is not supported yet"),
        "{err}"
    );
    assert!(err.contains("_use_new_zipfile_serialization=True"), "{err}");
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
    let entries = state_dict_entries(&top, "test").unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "w");
    assert_eq!(entries[0].1.storage.dtype, DType::I32);
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
