//! Element types as stored on disk, and a tensor held in host memory as `f32`.

use std::fmt;

use anyhow::{Result, bail};

/// Element type of a tensor as stored in the checkpoint file (the values in
/// [`HostTensor::data`] are always `f32`; this records where they came from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DType {
    /// IEEE 754 double.
    F64,
    /// IEEE 754 single.
    F32,
    /// IEEE 754 half.
    F16,
    /// bfloat16 (the top 16 bits of an `f32`).
    BF16,
    /// Signed 64-bit integer (e.g. `position_ids`).
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 16-bit integer.
    I16,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned byte.
    U8,
    /// One byte per element, 0 is false.
    Bool,
}

impl DType {
    /// Bytes per element on disk.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether this is a floating type (counted by [`crate::hub::Checkpoint::num_params`]).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// The safetensors spelling: `F32`, `BF16`, `BOOL`, ...
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    /// Decodes little-endian elements of this type into `f32`.
    ///
    /// `bytes.len()` must be a multiple of [`DType::size`]; a trailing partial
    /// element is an error (the caller names the file and tensor).
    pub(crate) fn decode_le(self, bytes: &[u8]) -> Result<Vec<f32>> {
        self.decode(bytes, false)
    }

    /// Like [`DType::decode_le`], for big-endian data when `big_endian` is set
    /// (PyTorch archives written on big-endian machines say so).
    pub(crate) fn decode(self, bytes: &[u8], big_endian: bool) -> Result<Vec<f32>> {
        let size = self.size();
        if !bytes.len().is_multiple_of(size) {
            bail!(
                "{} bytes is not a whole number of {} elements ({} bytes each)",
                bytes.len(),
                self,
                size
            );
        }
        macro_rules! conv {
            ($n:literal, |$a:ident| $e:expr) => {
                bytes
                    .chunks_exact($n)
                    .map(|c| {
                        let mut $a = [0u8; $n];
                        $a.copy_from_slice(c);
                        if big_endian {
                            $a.reverse();
                        }
                        $e
                    })
                    .collect()
            };
        }
        Ok(match self {
            DType::F64 => conv!(8, |a| f64::from_le_bytes(a) as f32),
            DType::F32 => conv!(4, |a| f32::from_le_bytes(a)),
            DType::F16 => conv!(2, |a| half::f16::from_le_bytes(a).to_f32()),
            DType::BF16 => conv!(2, |a| half::bf16::from_le_bytes(a).to_f32()),
            DType::I64 => conv!(8, |a| i64::from_le_bytes(a) as f32),
            DType::I32 => conv!(4, |a| i32::from_le_bytes(a) as f32),
            DType::I16 => conv!(2, |a| f32::from(i16::from_le_bytes(a))),
            DType::I8 => bytes.iter().map(|&b| f32::from(b as i8)).collect(),
            DType::U8 => bytes.iter().map(|&b| f32::from(b)).collect(),
            DType::Bool => bytes
                .iter()
                .map(|&b| if b != 0 { 1.0 } else { 0.0 })
                .collect(),
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor read from a checkpoint, values converted to `f32` (integers
/// too, e.g. `position_ids`), row-major (C order), `data.len() ==
/// shape.iter().product()` (1 for a scalar with `shape == []`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// The element type stored in the file.
    pub dtype: DType,
    /// The values, contiguous, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Number of elements (product of `shape`).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_dtype() {
        let f64s: Vec<u8> = [1.5f64, -2.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(DType::F64.decode_le(&f64s).unwrap(), vec![1.5, -2.25]);
        let f16s: Vec<u8> = [half::f16::from_f32(0.5), half::f16::from_f32(-3.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(DType::F16.decode_le(&f16s).unwrap(), vec![0.5, -3.0]);
        // bf16 0x3FC0 = 1.5, 0xC040 = -3.0
        assert_eq!(
            DType::BF16.decode_le(&[0xC0, 0x3F, 0x40, 0xC0]).unwrap(),
            vec![1.5, -3.0]
        );
        let i64s: Vec<u8> = [0i64, 7, -9].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(DType::I64.decode_le(&i64s).unwrap(), vec![0.0, 7.0, -9.0]);
        assert_eq!(
            DType::I16.decode_le(&(-300i16).to_le_bytes()).unwrap(),
            vec![-300.0]
        );
        assert_eq!(DType::I8.decode_le(&[0xFF, 5]).unwrap(), vec![-1.0, 5.0]);
        assert_eq!(DType::U8.decode_le(&[0xFF, 5]).unwrap(), vec![255.0, 5.0]);
        assert_eq!(
            DType::Bool.decode_le(&[0, 1, 2]).unwrap(),
            vec![0.0, 1.0, 1.0]
        );
        // big-endian f32 1.0 = 3F 80 00 00
        assert_eq!(
            DType::F32.decode(&[0x3F, 0x80, 0, 0], true).unwrap(),
            vec![1.0]
        );
    }

    #[test]
    fn partial_element_is_an_error() {
        let err = DType::F32.decode_le(&[0, 0, 0]).unwrap_err().to_string();
        assert!(err.contains("3 bytes"), "{err}");
        assert_eq!(DType::BF16.size(), 2);
        assert!(DType::BF16.is_float() && !DType::I64.is_float());
        assert_eq!(DType::Bool.to_string(), "BOOL");
    }
}
