//! Helpers shared by every family: the seeded generator of initial values,
//! the load report, host copies of tensors.

use burn::tensor::Tensor;

/// A small deterministic generator (SplitMix64), so that an initialisation
/// depends on the seed alone, never on a crate version.
#[derive(Clone, Debug)]
pub struct SeededRng {
    state: u64,
    spare_normal: Option<f64>,
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare_normal: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller, both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// What loading a checkpoint into an architecture found.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Keys taken from the checkpoint.
    pub loaded: usize,
    /// Keys the architecture needs that the checkpoint lacks (initialised fresh).
    pub missing: Vec<String>,
    /// Keys of a new task head, expected to be absent (initialised fresh).
    pub new_head: Vec<String>,
    /// Checkpoint keys the architecture does not use.
    pub unexpected: Vec<String>,
    /// Keys found in another library's naming, `found -> key`.
    pub renamed: Vec<String>,
    /// True when no checkpoint was used at all (training from scratch).
    pub from_scratch: bool,
    /// Tensors loaded at another shape and resampled to the model's
    /// (ViT's position embeddings at another image size): `key from -> to`.
    pub resampled: Vec<String>,
}

impl LoadReport {
    /// Human-readable lines, one per kind of finding; empty when everything matched.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.from_scratch {
            out.push("initialised from scratch (no pretrained weights used)".to_string());
            return out;
        }
        if !self.renamed.is_empty() {
            out.push(format!(
                "{} key(s) read from another naming of the same weights: {}",
                self.renamed.len(),
                abbreviate(&self.renamed, 4)
            ));
        }
        if !self.new_head.is_empty() {
            out.push(format!(
                "new head initialised (expected, it is trained on your data): {}",
                abbreviate(&self.new_head, 8)
            ));
        }
        if !self.missing.is_empty() {
            out.push(format!(
                "warning: {} key(s) missing from the checkpoint, initialised fresh: {}",
                self.missing.len(),
                abbreviate(&self.missing, 8)
            ));
        }
        if !self.resampled.is_empty() {
            out.push(format!(
                "resampled to this input size (bicubic, as transformers' \
                 interpolate_pos_encoding): {}",
                self.resampled.join(", ")
            ));
        }
        if !self.unexpected.is_empty() {
            out.push(format!(
                "{} checkpoint key(s) not used by this architecture: {}",
                self.unexpected.len(),
                abbreviate(&self.unexpected, 8)
            ));
        }
        out
    }
}

fn abbreviate(keys: &[String], n: usize) -> String {
    if keys.len() <= n {
        keys.join(", ")
    } else {
        format!("{}, ... ({} more)", keys[..n].join(", "), keys.len() - n)
    }
}

/// Tensors in checkpoint layout, ready for `hub::write_safetensors`.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Row-major [rows, cols] -> [cols, rows].
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

/// Host copy of a float tensor, with its shape.
pub fn host<const D: usize>(t: &Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.to_data().convert::<f32>();
    let shape = data.shape().as_slice().to_vec();
    let values = data
        .as_slice::<f32>()
        .map(|s| s.to_vec())
        .unwrap_or_default();
    (shape, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_standard_normal() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
        let ys: Vec<f64> = (0..20_000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
        let mut c = SeededRng::new(8);
        assert_ne!(xs[0], c.normal());
    }

    #[test]
    fn transpose_moves_rows_to_columns() {
        // [[1,2,3],[4,5,6]] -> [[1,4],[2,5],[3,6]]
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
