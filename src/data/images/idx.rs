//! The IDX format of the MNIST files (`*-images-idx3-ubyte`,
//! `*-labels-idx1-ubyte`): a four-byte magic `0 0 type ndims`, then `ndims`
//! big-endian `u32` dimensions, then the elements in row-major order.
//!
//! Written by hand: the format is that header and nothing else, and no
//! maintained crate reads it. Only unsigned bytes (type `0x08`, what MNIST
//! and Fashion-MNIST use) are read.

use anyhow::{Result, bail, ensure};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// Dimensions, outermost first (`[n, 28, 28]` for images, `[n]` for
    /// labels).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Parses an (uncompressed) IDX file; `what` names it in messages.
pub fn parse_idx(bytes: &[u8], what: &str) -> Result<Idx> {
    let bad = |why: String| anyhow::anyhow!("{what} is not a valid IDX file: {why}");
    let Some(&[z0, z1, ty, ndims]) = bytes.first_chunk::<4>() else {
        return Err(bad(format!(
            "{} bytes, shorter than the header",
            bytes.len()
        )));
    };
    if (z0, z1) != (0, 0) {
        return Err(bad(format!("magic starts {z0:#04x} {z1:#04x}, not 0 0")));
    }
    if ty != 0x08 {
        bail!(
            "{what} holds IDX element type {ty:#04x}; headstart reads only unsigned bytes (0x08)"
        );
    }
    let ndims = usize::from(ndims);
    ensure!(ndims > 0, bad("no dimensions".into()));
    let header = 4 + 4 * ndims;
    ensure!(
        bytes.len() >= header,
        bad(format!(
            "{} bytes, shorter than its {header}-byte header",
            bytes.len()
        ))
    );
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let got = bytes.len() - header;
    ensure!(
        want == Some(got),
        bad(format!(
            "dimensions {dims:?} need {} bytes of data, found {got} (truncated?)",
            want.map_or_else(|| "too many".to_owned(), |w| w.to_string())
        ))
    );
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDX file of `dims` and `data`.
    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    #[test]
    fn parses_images_and_labels() {
        let pixels: Vec<u8> = (0..2 * 3 * 2).collect();
        let idx = parse_idx(&idx_bytes(&[2, 3, 2], &pixels), "images").unwrap();
        assert_eq!(idx.dims, [2, 3, 2]);
        assert_eq!(idx.data, pixels);
        let idx = parse_idx(&idx_bytes(&[300], &[7; 300]), "labels").unwrap();
        assert_eq!((idx.dims, idx.data.len()), (vec![300], 300));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let err = |b: &[u8]| parse_idx(b, "x.idx").unwrap_err().to_string();
        assert!(err(&[0, 0]).contains("shorter than the header"));
        assert!(err(&[1, 0, 8, 1, 0, 0, 0, 0]).contains("magic"));
        assert!(err(&[0, 0, 0x0D, 1, 0, 0, 0, 0]).contains("element type 0x0d"));
        assert!(err(&[0, 0, 8, 2, 0, 0, 0, 1]).contains("header"));
        let truncated = idx_bytes(&[2, 2], &[1, 2, 3]);
        let e = err(&truncated);
        assert!(
            e.contains("x.idx") && e.contains("need 4 bytes") && e.contains("found 3"),
            "{e}"
        );
        let long = idx_bytes(&[1], &[1, 2]);
        assert!(err(&long).contains("found 2"));
    }
}
