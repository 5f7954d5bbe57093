//! numpy arrays in a pickle, as `pickle.dump(array)` writes them with
//! protocols 2 to 4:
//!
//! ```text
//! numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')   REDUCE
//! (1, shape, numpy.dtype('u1', False, True), is_fortran, raw)      BUILD
//! ```
//!
//! where the dtype gets its byte order from its own BUILD state
//! `(3, '<', ...)`. The VM recognises exactly these two globals by name and
//! records what BUILD hands them; nothing is imported or called. The raw
//! bytes must hold exactly `shape` elements of the dtype. Only plain numeric
//! dtypes in C order are read (what the data sets we fetch use); object
//! arrays, structured dtypes and Fortran order are errors. Protocol 5's
//! out-of-band buffers (`_frombuffer`) are not read either.

use anyhow::{Context, Result, bail, ensure};

use super::super::tensor::DType;
use super::vm::{Unpickler, Value};

/// A numpy array read from a pickle: its raw bytes, unconverted.
#[derive(Debug, Clone, PartialEq)]
pub struct NpArray {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Whether multi-byte elements are stored big-endian.
    pub big_endian: bool,
    /// `shape.iter().product() * dtype.size()` bytes, row-major (C order).
    pub data: Vec<u8>,
}

impl NpArray {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements of an integer or bool array as `i64`.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let size = self.dtype.size();
        // Each element, little-endian, in the low bytes of a word.
        let le = |c: &[u8]| {
            let mut a = [0u8; 8];
            a[..size].copy_from_slice(c);
            if self.big_endian {
                a[..size].reverse();
            }
            a
        };
        let elems = self.data.chunks_exact(size).map(le);
        Ok(match self.dtype {
            DType::U8 | DType::Bool => elems.map(|a| i64::from(a[0])).collect(),
            DType::I8 => elems.map(|a| i64::from(a[0] as i8)).collect(),
            DType::I16 => elems
                .map(|a| i64::from(i16::from_le_bytes([a[0], a[1]])))
                .collect(),
            DType::I32 => elems
                .map(|a| i64::from(i32::from_le_bytes([a[0], a[1], a[2], a[3]])))
                .collect(),
            DType::I64 => elems.map(i64::from_le_bytes).collect(),
            other => bail!("a {other} array has no integer values"),
        })
    }

    /// The elements as `f32` (any dtype).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.dtype.decode(&self.data, self.big_endian)
    }
}

/// A `numpy.dtype` while the pickle is being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NpDtype {
    /// The type string given to `numpy.dtype`, e.g. `u1`, `i8`, `f4`.
    descr: String,
    /// `<`, `>`, `|` or `=` (set by BUILD; `|` until then).
    byteorder: char,
}

impl NpDtype {
    pub(super) fn new(descr: &str) -> Self {
        NpDtype {
            descr: descr.to_owned(),
            byteorder: '|',
        }
    }

    fn resolve(&self) -> Result<(DType, bool)> {
        let dtype = match self.descr.as_str() {
            "b1" | "?" => DType::Bool,
            "u1" => DType::U8,
            "i1" => DType::I8,
            "i2" => DType::I16,
            "i4" => DType::I32,
            "i8" => DType::I64,
            "f2" => DType::F16,
            "f4" => DType::F32,
            "f8" => DType::F64,
            other => bail!(
                "numpy dtype {other:?} is not read by headstart (it reads bool, int8-64, uint8 \
                 and float16-64 arrays)"
            ),
        };
        let big_endian = match self.byteorder {
            '>' => true,
            '=' => cfg!(target_endian = "big"),
            _ => false,
        };
        Ok((dtype, big_endian))
    }
}

/// BUILD on a dtype: state `(version, byteorder, subdescr, names, fields,
/// elsize, alignment, flags)`; only the byte order matters for plain types.
pub(super) fn build_dtype(dtype: &mut NpDtype, state: &Value) -> Result<()> {
    let Value::Tuple(t) = state else {
        bail!("numpy dtype state is a {}, not a tuple", state.kind());
    };
    match t.get(1) {
        Some(Value::Str(order)) if matches!(&**order, "<" | ">" | "|" | "=") => {
            dtype.byteorder = order.chars().next().expect("one char");
        }
        _ => bail!("numpy dtype state has no byte order"),
    }
    if t.get(3).is_some_and(|names| !matches!(names, Value::None)) {
        bail!("structured numpy dtypes (with fields) are not read by headstart");
    }
    Ok(())
}

/// BUILD on an array: state `(version, shape, dtype, is_fortran, raw)`, or
/// the same without the version.
pub(super) fn build_array(state: &Value) -> Result<NpArray> {
    let Value::Tuple(t) = state else {
        bail!("numpy array state is a {}, not a tuple", state.kind());
    };
    let (shape, dtype, fortran, raw) = match &t[..] {
        [Value::Int(_), shape, dtype, fortran, raw] | [shape, dtype, fortran, raw] => {
            (shape, dtype, fortran, raw)
        }
        _ => bail!("numpy array state has {} items, expected 4 or 5", t.len()),
    };
    let Value::Tuple(dims) = shape else {
        bail!("numpy array shape is a {}", shape.kind());
    };
    let shape: Vec<usize> = dims
        .iter()
        .map(|d| match d {
            Value::Int(n) => usize::try_from(*n).ok(),
            _ => None,
        })
        .collect::<Option<_>>()
        .context("numpy array shape is not a tuple of non-negative ints")?;
    let Value::NpDtype(dtype) = dtype else {
        bail!("numpy array dtype is a {}", dtype.kind());
    };
    let (dtype, big_endian) = dtype.borrow().resolve()?;
    match fortran {
        Value::Bool(false) => {}
        Value::Bool(true) => bail!("numpy arrays in Fortran order are not read by headstart"),
        other => bail!("numpy array order flag is a {}", other.kind()),
    }
    let data = match raw {
        Value::Bytes(b) => b.to_vec(),
        Value::List(_) => bail!("numpy object arrays are not read by headstart"),
        other => bail!("numpy array data is a {}, not bytes", other.kind()),
    };
    let want = shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d));
    ensure!(
        want == Some(data.len()),
        "numpy array of shape {shape:?} and dtype {dtype} holds {} bytes, not {}",
        data.len(),
        want.map_or_else(
            || "a number that fits in memory".to_owned(),
            |w| w.to_string()
        )
    );
    Ok(NpArray {
        shape,
        dtype,
        big_endian,
        data,
    })
}

/// Reads a pickle (protocol 2 to 4) whose top object is one numpy array, as
/// `pickle.dump(array, f)` writes it. `what` names the data in messages.
/// Nothing in the pickle is executed.
pub fn read_numpy_pickle(pickle: &[u8], what: &str) -> Result<NpArray> {
    match Unpickler::new(pickle, what).run()? {
        Value::NdArray(a) => a
            .borrow()
            .clone()
            .with_context(|| format!("{what}: the numpy array was never given its data")),
        other => bail!("{what} holds a {}, not a numpy array", other.kind()),
    }
}
