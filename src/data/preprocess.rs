//! Image preprocessing: decode, resize, crop, normalise, and the seeded
//! training augmentations.
//!
//! The recipe is torchvision's evaluation transform: the shorter side
//! resized to `resize` (bilinear with antialiasing, the longer side
//! `floor(resize * long / short)`), a centre crop of `crop` x `crop`
//! (offsets rounded like torchvision's `CenterCrop`), values scaled to
//! [0, 1] and normalised per channel with `mean` and `std`, laid out NCHW.
//! Keras' Caffe-mode weights (VGG16) want the channels in BGR order and
//! values in [0, 255]: [`Recipe::channels`] and [`Recipe::pixel_scale`]
//! say so ([`Recipe::caffe`]); recipes written before those fields existed
//! read as RGB in [0, 1].
//! Grey images are repeated to three channels; an alpha channel is dropped
//! (as PIL's `convert("RGB")` does); 16-bit images are scaled to 8 bits.
//!
//! Decoding and resampling are the `image` crate's; only the crop
//! arithmetic, normalisation and the seeded augmentation draws are here.

use std::path::Path;

use anyhow::{Context, Result, bail};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::models::params::SeededRng;

/// ImageNet's per-channel mean and standard deviation (RGB), as torchvision uses them.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// The Caffe ImageNet mean Keras subtracts in `preprocess_input(mode="caffe")`,
/// in BGR order, on 0-255 values.
pub const CAFFE_MEAN_BGR: [f64; 3] = [103.939, 116.779, 123.68];

/// The order of the model's three input channels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    #[default]
    Rgb,
    /// Blue, green, red (Caffe and the Keras models converted from it).
    Bgr,
}

fn one() -> f64 {
    1.0
}

/// How pixels become a model's input; recorded in the run and exported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The shorter side is resized to this many pixels.
    pub resize: u32,
    /// Then a centre crop of `crop` x `crop`.
    pub crop: u32,
    /// Per-channel mean and std after scaling to [0, `pixel_scale`], in
    /// the order of the model's channels (`channels`).
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// The order of the model's input channels.
    #[serde(default)]
    pub channels: ChannelOrder,
    /// Pixel values are scaled to [0, `pixel_scale`] before the mean is
    /// subtracted: 1 (torchvision), 255 (Caffe).
    #[serde(default = "one")]
    pub pixel_scale: f64,
}

impl Recipe {
    /// torchvision's ImageNet evaluation recipe for a crop of `crop` pixels
    /// (resize = crop x 256/224, as for 224 -> 256).
    pub fn imagenet(crop: u32) -> Self {
        Self {
            resize: (crop as f64 * 256.0 / 224.0).round() as u32,
            crop,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channels: ChannelOrder::Rgb,
            pixel_scale: 1.0,
        }
    }

    /// Keras' Caffe mode (the input of its ImageNet VGG16): BGR, values in
    /// [0, 255] minus [`CAFFE_MEAN_BGR`], no scaling by a std; the same
    /// resize and centre crop as [`Recipe::imagenet`].
    pub fn caffe(crop: u32) -> Self {
        Self {
            mean: CAFFE_MEAN_BGR,
            std: [1.0; 3],
            channels: ChannelOrder::Bgr,
            pixel_scale: 255.0,
            ..Self::imagenet(crop)
        }
    }

    pub fn check(&self) -> Result<()> {
        if self.crop == 0 || self.resize < self.crop {
            bail!(
                "image recipe: crop {} must be positive and at most the resize {}",
                self.crop,
                self.resize
            );
        }
        if self.std.iter().any(|s| *s <= 0.0) {
            bail!("image recipe: std {:?} must be positive", self.std);
        }
        if !(self.pixel_scale > 0.0 && self.pixel_scale.is_finite()) {
            bail!(
                "image recipe: pixel_scale {} must be positive (1 for [0, 1], 255 for [0, 255])",
                self.pixel_scale
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        format!(
            "resize shorter side to {}, centre crop {}x{}, values in [0, {}], mean {:?}, std {:?}, \
             {}, NCHW",
            self.resize,
            self.crop,
            self.crop,
            self.pixel_scale,
            self.mean,
            self.std,
            match self.channels {
                ChannelOrder::Rgb => "RGB",
                ChannelOrder::Bgr => "BGR",
            }
        )
    }
}

/// `--augment`: what training images go through before the crop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    /// The evaluation transform only (the feature cache can be used).
    #[default]
    None,
    /// A random horizontal flip.
    Light,
    /// torchvision's training recipe: a random-resized crop (scale 0.08-1,
    /// aspect 3/4-4/3) and a random horizontal flip.
    Standard,
}

/// A decoded image, kept at the resolution the recipe needs.
#[derive(Clone, Debug)]
pub struct Stored {
    pub image: RgbImage,
}

/// Decodes `path` into RGB; a file that will not decode is an error naming it.
pub fn decode(path: &Path) -> Result<RgbImage> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read image {}", path.display()))?;
    decode_bytes(&bytes, path)
}

/// Decodes the bytes of the image file `path` (named in errors).
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?
        .decode()
        .with_context(|| {
            format!(
                "{} is not a decodable image (PNG, JPEG, BMP or WebP)",
                path.display()
            )
        })?;
    Ok(to_rgb(img))
}

fn to_rgb(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// The size after resizing the shorter side of a `w` x `h` image to `size`.
fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w <= h {
        (size, ((size as u64 * h as u64) / w.max(1) as u64) as u32)
    } else {
        (((size as u64 * w as u64) / h.max(1) as u64) as u32, size)
    }
}

impl Stored {
    /// Keeps `image` at the recipe's resize when it is larger, as it is
    /// otherwise (resized when a batch is made, with the same result).
    pub fn new(image: RgbImage, recipe: &Recipe) -> Self {
        let (w, h) = image.dimensions();
        let (rw, rh) = resized_dims(w, h, recipe.resize);
        if (rw as u64) * (rh as u64) < (w as u64) * (h as u64) {
            Self {
                image: image::imageops::resize(&image, rw, rh, FilterType::Triangle),
            }
        } else {
            Self { image }
        }
    }

    /// The image resized so its shorter side is `recipe.resize`.
    fn resized(&self, recipe: &Recipe) -> std::borrow::Cow<'_, RgbImage> {
        let (w, h) = self.image.dimensions();
        let (rw, rh) = resized_dims(w, h, recipe.resize);
        if (rw, rh) == (w, h) {
            std::borrow::Cow::Borrowed(&self.image)
        } else {
            std::borrow::Cow::Owned(image::imageops::resize(
                &self.image,
                rw,
                rh,
                FilterType::Triangle,
            ))
        }
    }

    /// Writes the model input `[3, crop, crop]` into `out`: the evaluation
    /// transform, or an augmented view drawn from `rng`.
    pub fn write(
        &self,
        recipe: &Recipe,
        augment: Option<(Augment, &mut SeededRng)>,
        out: &mut [f32],
    ) {
        let c = recipe.crop;
        let (patch, flip): (RgbImage, bool) = match augment {
            None | Some((Augment::None, _)) => (center_crop(&self.resized(recipe), c), false),
            Some((Augment::Light, rng)) => {
                (center_crop(&self.resized(recipe), c), rng.uniform() < 0.5)
            }
            Some((Augment::Standard, rng)) => {
                let r = self.resized(recipe);
                let (x, y, w, h) = random_resized_box(r.width(), r.height(), rng);
                let view = image::imageops::crop_imm(&*r, x, y, w, h).to_image();
                let patch = image::imageops::resize(&view, c, c, FilterType::Triangle);
                (patch, rng.uniform() < 0.5)
            }
        };
        let plane = (c * c) as usize;
        let mean = recipe.mean.map(|m| m as f32);
        let std = recipe.std.map(|s| s as f32);
        let scale = (recipe.pixel_scale / 255.0) as f32;
        let source: [usize; 3] = match recipe.channels {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        for (x, y, p) in patch.enumerate_pixels() {
            let xx = if flip { c - 1 - x } else { x };
            let at = (y * c + xx) as usize;
            for ch in 0..3 {
                out[ch * plane + at] = (p.0[source[ch]] as f32 * scale - mean[ch]) / std[ch];
            }
        }
    }
}

/// torchvision's `CenterCrop` of a resized image (offsets
/// `round((side - crop) / 2)`); an image smaller than the crop is padded
/// with zeros first, as torchvision does.
fn center_crop(img: &RgbImage, crop: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(crop, crop);
    let off = |side: u32| ((side as f64 - crop as f64) / 2.0).round() as i64;
    let (ox, oy) = (off(w), off(h));
    for y in 0..crop {
        for x in 0..crop {
            let (sx, sy) = (x as i64 + ox, y as i64 + oy);
            if sx >= 0 && sy >= 0 && (sx as u32) < w && (sy as u32) < h {
                out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

/// torchvision's `RandomResizedCrop.get_params`: up to ten draws of an area
/// share in [0.08, 1] and a log-uniform aspect ratio in [3/4, 4/3]; the
/// centre crop of the largest fitting box otherwise.
fn random_resized_box(w: u32, h: u32, rng: &mut SeededRng) -> (u32, u32, u32, u32) {
    let area = (w * h) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * (0.08 + rng.uniform() * 0.92);
        let ratio = (lo + rng.uniform() * (hi - lo)).exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = (rng.uniform() * (w - cw + 1) as f64) as u32;
            let y = (rng.uniform() * (h - ch + 1) as f64) as u32;
            return (x.min(w - cw), y.min(h - ch), cw, ch);
        }
    }
    let ratio = w as f64 / h as f64;
    let (cw, ch) = if ratio < 3.0 / 4.0 {
        (w, ((w as f64) / (3.0 / 4.0)).round() as u32)
    } else if ratio > 4.0 / 3.0 {
        (((h as f64) * (4.0 / 3.0)).round() as u32, h)
    } else {
        (w, h)
    };
    let (cw, ch) = (cw.min(w), ch.min(h));
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        })
    }

    #[test]
    fn shorter_side_resizes_like_torchvision() {
        assert_eq!(resized_dims(640, 480, 256), (341, 256));
        assert_eq!(resized_dims(480, 640, 256), (256, 341));
        assert_eq!(resized_dims(28, 28, 256), (256, 256));
    }

    #[test]
    fn centre_crop_takes_the_middle_and_pads_small_images() {
        let img = gradient(10, 6);
        let c = center_crop(&img, 4);
        // offsets round((10-4)/2) = 3 and round((6-4)/2) = 1
        assert_eq!(c.get_pixel(0, 0).0, [3, 1, 128]);
        let small = center_crop(&gradient(2, 2), 4);
        assert_eq!(small.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(small.get_pixel(1, 1).0, [0, 0, 128]);
    }

    #[test]
    fn stored_images_give_the_same_input_whatever_was_kept() {
        let recipe = Recipe::imagenet(24);
        let big = gradient(90, 60);
        let small = gradient(20, 20);
        for img in [big, small] {
            let stored = Stored::new(img.clone(), &recipe);
            let mut a = vec![0f32; 3 * 24 * 24];
            stored.write(&recipe, None, &mut a);
            // from the full image, resized at batch time
            let full = Stored { image: img };
            let mut b = vec![0f32; 3 * 24 * 24];
            full.write(&recipe, None, &mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn normalisation_and_channel_planes() {
        let recipe = Recipe {
            resize: 2,
            crop: 2,
            mean: [0.5, 0.0, 0.0],
            std: [0.5, 1.0, 1.0],
            channels: ChannelOrder::Rgb,
            pixel_scale: 1.0,
        };
        let img = RgbImage::from_fn(2, 2, |x, _| {
            image::Rgb([if x == 0 { 0 } else { 255 }, 255, 0])
        });
        let mut out = vec![0f32; 12];
        Stored::new(img, &recipe).write(&recipe, None, &mut out);
        assert_eq!(&out[0..4], &[-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(&out[4..8], &[1.0; 4]);
        assert_eq!(&out[8..12], &[0.0; 4]);
    }

    #[test]
    fn caffe_mode_is_bgr_on_0_to_255_minus_the_mean() {
        let recipe = Recipe::caffe(2);
        assert_eq!((recipe.resize, recipe.crop), (2, 2));
        recipe.check().unwrap();
        let img = RgbImage::from_fn(2, 2, |_, _| image::Rgb([10, 20, 200]));
        let mut out = vec![0f32; 12];
        Stored::new(img, &recipe).write(&recipe, None, &mut out);
        // channel 0 is blue, 1 green, 2 red: Keras' x[..., ::-1] - mean
        let want = [200.0 - 103.939, 20.0 - 116.779, 10.0 - 123.68];
        for ch in 0..3 {
            for v in &out[ch * 4..ch * 4 + 4] {
                assert!((v - want[ch] as f32).abs() < 1e-4, "{ch}: {v}");
            }
        }
        assert!(recipe.describe().contains("BGR") && recipe.describe().contains("[0, 255]"));
        // recipes recorded before channel order and scale existed read as before
        let old: Recipe = serde_json::from_str(
            r#"{"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406],
                "std": [0.229, 0.224, 0.225]}"#,
        )
        .unwrap();
        assert_eq!(old, Recipe::imagenet(224));
        let bad = Recipe {
            pixel_scale: 0.0,
            ..Recipe::imagenet(4)
        };
        assert!(bad.check().unwrap_err().to_string().contains("pixel_scale"));
    }

    #[test]
    fn augmentation_is_seeded_and_flips() {
        let recipe = Recipe::imagenet(16);
        let stored = Stored::new(gradient(40, 30), &recipe);
        let draw = |seed| {
            let mut rng = SeededRng::new(seed);
            let mut out = vec![0f32; 3 * 16 * 16];
            stored.write(&recipe, Some((Augment::Standard, &mut rng)), &mut out);
            out
        };
        assert_eq!(draw(1), draw(1));
        assert!((1..20).any(|s| draw(s) != draw(0)));
        let mut plain = vec![0f32; 3 * 16 * 16];
        stored.write(&recipe, None, &mut plain);
        // a light augmentation is the plain view or its mirror
        for seed in 0..8 {
            let mut rng = SeededRng::new(seed);
            let mut out = vec![0f32; 3 * 16 * 16];
            stored.write(&recipe, Some((Augment::Light, &mut rng)), &mut out);
            let mirrored: Vec<f32> = plain
                .chunks(16)
                .flat_map(|row| row.iter().rev().copied())
                .collect();
            assert!(out == plain || out == mirrored);
        }
    }

    #[test]
    fn random_boxes_fit_the_image() {
        let mut rng = SeededRng::new(3);
        for _ in 0..200 {
            let (x, y, w, h) = random_resized_box(50, 30, &mut rng);
            assert!(w > 0 && h > 0 && x + w <= 50 && y + h <= 30);
        }
    }

    #[test]
    fn undecodable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broken.png");
        std::fs::write(&p, b"not an image").unwrap();
        let err = format!("{:#}", decode(&p).unwrap_err());
        assert!(err.contains("broken.png"), "{err}");
    }
}
