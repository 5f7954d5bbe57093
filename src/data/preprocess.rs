//! Image preprocessing: decode, resize, crop, normalise, and the seeded
//! training augmentations.
//!
//! The default recipe is torchvision's evaluation transform: the shorter
//! side resized to `resize` (bilinear with antialiasing, the longer side
//! `floor(resize * long / short)`), a centre crop of `crop` x `crop`
//! (offsets rounded like torchvision's `CenterCrop`), values scaled to
//! [0, 1] and normalised per channel with `mean` and `std`, laid out NCHW.
//! Keras' Caffe-mode weights (VGG16) want the channels in BGR order and
//! values in [0, 255]: [`Recipe::channels`] and [`Recipe::rescale_factor`]
//! say so ([`Recipe::caffe`]); recipes written before those fields existed
//! read as RGB in [0, 1].
//! Hugging Face image processors (`preprocessor_config.json`, e.g. ViT's:
//! both sides resized straight to 224, mean and std 0.5) map onto the same
//! recipe ([`Recipe::from_preprocessor`]) with `resize_mode: stretch`, and
//! a recipe is written back as one ([`Recipe::to_preprocessor`]).
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

/// How [`Stored::write`] turns an image into model input, as a revision
/// the feature cache's key includes: a change to the pixels a recipe gives
/// (a crop offset, a resampling filter) must bump it, so that features
/// cached by an earlier build are computed again rather than reused.
/// 2: centre crops start where torchvision's do (halves rounded to even).
pub const PIXELS_REVISION: &str = "2";

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

/// How pixels become a model's input; recorded in the run and exported.
/// Fields added after the first release have defaults (torchvision's
/// behaviour) and are left out of the record when they hold them, so older
/// runs read and hash as before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The shorter side is resized to this many pixels (both sides, with
    /// [`ResizeMode::Stretch`]).
    pub resize: u32,
    /// Then a centre crop of `crop` x `crop`.
    pub crop: u32,
    /// Per-channel mean and std after rescaling, in the order of the
    /// model's channels (`channels`).
    pub mean: [f64; 3],
    pub std: [f64; 3],
    #[serde(default, skip_serializing_if = "is_default")]
    pub resize_mode: ResizeMode,
    #[serde(default, skip_serializing_if = "is_default")]
    pub resample: Resample,
    /// Pixel values (0-255) are multiplied by this before normalising:
    /// 1/255 (torchvision, HF), 1 (Caffe).
    #[serde(
        default = "default_rescale",
        skip_serializing_if = "is_default_rescale"
    )]
    pub rescale_factor: f64,
    /// The order of the model's input channels.
    #[serde(default, skip_serializing_if = "is_default")]
    pub channels: ChannelOrder,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

const DEFAULT_RESCALE: f64 = 1.0 / 255.0;

fn default_rescale() -> f64 {
    DEFAULT_RESCALE
}

fn is_default_rescale(v: &f64) -> bool {
    *v == DEFAULT_RESCALE
}

/// How an image reaches `resize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// The shorter side to `resize`, the aspect ratio kept (torchvision).
    #[default]
    Shorter,
    /// Both sides to `resize`, the aspect ratio not kept (Hugging Face's
    /// `size: {height, width}`, as ViT's processor does).
    Stretch,
}

/// The resampling filter (PIL's codes in `preprocessor_config.json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// PIL 0.
    Nearest,
    /// PIL 2, with antialiasing when shrinking.
    #[default]
    Bilinear,
    /// PIL 3.
    Bicubic,
    /// PIL 1.
    Lanczos,
}

impl Resample {
    fn filter(self) -> FilterType {
        match self {
            Self::Nearest => FilterType::Nearest,
            Self::Bilinear => FilterType::Triangle,
            Self::Bicubic => FilterType::CatmullRom,
            Self::Lanczos => FilterType::Lanczos3,
        }
    }

    /// PIL's code, as `preprocessor_config.json` writes it.
    pub fn pil_code(self) -> u64 {
        match self {
            Self::Nearest => 0,
            Self::Lanczos => 1,
            Self::Bilinear => 2,
            Self::Bicubic => 3,
        }
    }

    fn from_pil(code: u64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            _ => return None,
        })
    }
}

/// The standard mean and std of Hugging Face's ViT processor.
pub const HALF: [f64; 3] = [0.5, 0.5, 0.5];

impl Recipe {
    /// torchvision's ImageNet evaluation recipe for a crop of `crop` pixels
    /// (resize = crop x 256/224, as for 224 -> 256).
    pub fn imagenet(crop: u32) -> Self {
        Self {
            resize: (crop as f64 * 256.0 / 224.0).round() as u32,
            crop,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            resize_mode: ResizeMode::Shorter,
            resample: Resample::Bilinear,
            rescale_factor: DEFAULT_RESCALE,
            channels: ChannelOrder::Rgb,
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
            rescale_factor: 1.0,
            ..Self::imagenet(crop)
        }
    }

    /// Hugging Face's `ViTImageProcessor` defaults at `side` pixels: both
    /// sides resized to `side` (bilinear), no crop, mean and std 0.5.
    pub fn vit(side: u32) -> Self {
        Self {
            resize: side,
            crop: side,
            mean: HALF,
            std: HALF,
            resize_mode: ResizeMode::Stretch,
            resample: Resample::Bilinear,
            rescale_factor: DEFAULT_RESCALE,
            channels: ChannelOrder::Rgb,
        }
    }

    /// The recipe of a family's published models when a checkpoint names
    /// none (a bare weights file): ViT's processor for `vit`, torchvision's
    /// ImageNet transform otherwise.
    pub fn default_for(model_type: &str, side: u32) -> Self {
        match model_type {
            "vit" => Self::vit(side),
            _ => Self::imagenet(side),
        }
    }

    /// The same recipe for inputs of `side` pixels: the resize scales with
    /// the crop (256 for 224 stays 256/224 of it).
    pub fn at_size(self, side: u32) -> Self {
        if side == self.crop {
            return self;
        }
        let resize = (self.resize as f64 * side as f64 / self.crop as f64).round() as u32;
        Self {
            resize: resize.max(side),
            crop: side,
            ..self
        }
    }

    /// The recipe a model directory names: `preprocessing` in its
    /// `config.json` (headstart's own record of a run), else its
    /// `preprocessor_config.json` (a Hugging Face image processor), else
    /// the family's default at 224 pixels; at `side` pixels when given.
    pub fn for_model(model: &Path, model_type: &str, side: Option<u32>) -> Result<Self> {
        let config = model.join("config.json");
        let processor = model.join("preprocessor_config.json");
        let recorded = if model.is_dir() && config.is_file() {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", config.display()))?;
            v.get("preprocessing")
                .map(|r| {
                    serde_json::from_value::<Recipe>(r.clone()).with_context(|| {
                        format!(
                            "{}: `preprocessing` is not an image recipe",
                            config.display()
                        )
                    })
                })
                .transpose()?
        } else {
            None
        };
        let recipe = match recorded {
            Some(r) => r,
            None if model.is_dir() && processor.is_file() => Self::from_preprocessor(&processor)?,
            None => Self::default_for(model_type, 224),
        };
        let recipe = match side {
            Some(s) => recipe.at_size(s),
            None => recipe,
        };
        recipe.check()?;
        Ok(recipe)
    }

    /// Maps a Hugging Face `preprocessor_config.json` onto a recipe:
    /// `size` as `{height, width}` (or one number) resizes both sides
    /// (square only), `{shortest_edge}` the shorter side and then needs
    /// `do_center_crop` with `crop_size`; `resample` is PIL's code (0-3);
    /// `do_rescale`/`rescale_factor`, `do_normalize`/`image_mean`/`image_std`
    /// as transformers applies them. Absent fields take `ViTImageProcessor`'s
    /// defaults (224 x 224, bilinear, 1/255, mean and std 0.5).
    pub fn from_preprocessor(path: &Path) -> Result<Self> {
        let name = path.display();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {name}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{name} is not JSON"))?;
        let flag = |k: &str, default: bool| -> Result<bool> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(b) => b
                    .as_bool()
                    .with_context(|| format!("{name}: `{k}` must be true or false, not {b}")),
            }
        };
        // a side, {height, width} (square), or {shortest_edge}
        enum Size {
            Square(u32),
            Shortest(u32),
        }
        let size_of = |k: &str| -> Result<Option<Size>> {
            let bad = || {
                anyhow::anyhow!(
                    "{name}: `{k}` must be a number, {{\"height\": N, \"width\": N}} or \
                     {{\"shortest_edge\": N}}"
                )
            };
            let int = |x: &serde_json::Value| x.as_u64().filter(|n| *n > 0).map(|n| n as u32);
            Ok(match v.get(k) {
                None | Some(serde_json::Value::Null) => None,
                Some(n) if n.is_number() => Some(Size::Square(int(n).ok_or_else(bad)?)),
                Some(o) if o.get("shortest_edge").is_some() => {
                    Some(Size::Shortest(int(&o["shortest_edge"]).ok_or_else(bad)?))
                }
                Some(o) => {
                    let (h, w) = (
                        o.get("height").and_then(int).ok_or_else(bad)?,
                        o.get("width").and_then(int).ok_or_else(bad)?,
                    );
                    if h != w {
                        bail!(
                            "{name}: `{k}` is {h}x{w}; only square inputs are supported \
                             (edit it to equal height and width)"
                        );
                    }
                    Some(Size::Square(h))
                }
            })
        };
        if !flag("do_resize", true)? {
            bail!(
                "{name}: do_resize is false, but the images of one batch must share a size; \
                 set do_resize to true with a `size`"
            );
        }
        let crop = if flag("do_center_crop", false)? {
            match size_of("crop_size")? {
                Some(Size::Square(c)) => Some(c),
                _ => bail!("{name}: do_center_crop needs a square `crop_size` {{height, width}}"),
            }
        } else {
            None
        };
        let (resize_mode, resize) = match size_of("size")?.unwrap_or(Size::Square(224)) {
            Size::Square(s) => (ResizeMode::Stretch, s),
            Size::Shortest(s) => (ResizeMode::Shorter, s),
        };
        let crop = match (crop, resize_mode) {
            (Some(c), _) => c,
            (None, ResizeMode::Stretch) => resize,
            (None, ResizeMode::Shorter) => bail!(
                "{name}: size {{shortest_edge}} without do_center_crop gives images of \
                 different shapes; add do_center_crop with a crop_size"
            ),
        };
        let resample = match v.get("resample") {
            None | Some(serde_json::Value::Null) => Resample::Bilinear,
            Some(r) => r.as_u64().and_then(Resample::from_pil).with_context(|| {
                format!(
                    "{name}: resample {r} is not supported (0 nearest, 1 lanczos, 2 bilinear, \
                     3 bicubic)"
                )
            })?,
        };
        let rescale_factor = if flag("do_rescale", true)? {
            match v.get("rescale_factor") {
                None | Some(serde_json::Value::Null) => DEFAULT_RESCALE,
                Some(f) => f
                    .as_f64()
                    .filter(|f| *f > 0.0)
                    .with_context(|| format!("{name}: rescale_factor {f} must be positive"))?,
            }
        } else {
            1.0
        };
        let triple = |k: &str| -> Result<[f64; 3]> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(HALF),
                Some(x) if x.is_number() => Ok([x.as_f64().unwrap_or(0.0); 3]),
                Some(x) => {
                    let vals: Option<Vec<f64>> = x
                        .as_array()
                        .and_then(|a| a.iter().map(|e| e.as_f64()).collect::<Option<Vec<f64>>>());
                    match vals.as_deref() {
                        Some([a, b, c]) => Ok([*a, *b, *c]),
                        _ => bail!("{name}: `{k}` must be three numbers (R, G, B), not {x}"),
                    }
                }
            }
        };
        let (mean, std) = if flag("do_normalize", true)? {
            (triple("image_mean")?, triple("image_std")?)
        } else {
            ([0.0; 3], [1.0; 3])
        };
        let recipe = Self {
            resize,
            crop,
            mean,
            std,
            resize_mode,
            resample,
            rescale_factor,
            // Hugging Face image processors feed RGB
            channels: ChannelOrder::Rgb,
        };
        recipe.check().with_context(|| format!("in {name}"))?;
        Ok(recipe)
    }

    /// The recipe as a Hugging Face `preprocessor_config.json`:
    /// `ViTImageProcessor` for a stretch to a square, an image processor
    /// with `shortest_edge` and a centre crop (`MobileNetV2ImageProcessor`)
    /// for torchvision's recipe.
    pub fn to_preprocessor(&self) -> serde_json::Value {
        let square = |s: u32| serde_json::json!({"height": s, "width": s});
        let mut v = serde_json::json!({
            "do_resize": true,
            "resample": self.resample.pil_code(),
            "do_rescale": true,
            "rescale_factor": self.rescale_factor,
            "do_normalize": true,
            "image_mean": self.mean,
            "image_std": self.std,
        });
        let o = v.as_object_mut().expect("an object");
        match self.resize_mode {
            ResizeMode::Stretch => {
                o.insert("image_processor_type".into(), "ViTImageProcessor".into());
                o.insert("size".into(), square(self.resize));
                if self.crop != self.resize {
                    o.insert("do_center_crop".into(), true.into());
                    o.insert("crop_size".into(), square(self.crop));
                }
            }
            ResizeMode::Shorter => {
                o.insert(
                    "image_processor_type".into(),
                    "MobileNetV2ImageProcessor".into(),
                );
                o.insert(
                    "size".into(),
                    serde_json::json!({"shortest_edge": self.resize}),
                );
                o.insert("do_center_crop".into(), true.into());
                o.insert("crop_size".into(), square(self.crop));
            }
        }
        v
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
        if !(self.rescale_factor > 0.0 && self.rescale_factor.is_finite()) {
            bail!(
                "image recipe: rescale_factor {} must be positive (1/255 for values in [0, 1], \
                 1 for [0, 255])",
                self.rescale_factor
            );
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let resize = match self.resize_mode {
            ResizeMode::Shorter => format!("resize shorter side to {}", self.resize),
            ResizeMode::Stretch => format!("resize to {0}x{0}", self.resize),
        };
        let crop = if self.resize_mode == ResizeMode::Stretch && self.crop == self.resize {
            String::new()
        } else {
            format!(", centre crop {0}x{0}", self.crop)
        };
        let mut extra = String::new();
        if self.resample != Resample::Bilinear {
            extra.push_str(&format!(", {:?} resampling", self.resample).to_lowercase());
        }
        if self.rescale_factor == 1.0 {
            extra.push_str(", values in [0, 255]");
        } else if self.rescale_factor != DEFAULT_RESCALE {
            extra.push_str(&format!(", values x {}", self.rescale_factor));
        }
        format!(
            "{resize}{crop}, mean {:?}, std {:?}{extra}, {}, NCHW",
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

/// The size `recipe` resizes a `w` x `h` image to.
fn target_dims(w: u32, h: u32, recipe: &Recipe) -> (u32, u32) {
    match recipe.resize_mode {
        ResizeMode::Shorter => resized_dims(w, h, recipe.resize),
        ResizeMode::Stretch => (recipe.resize, recipe.resize),
    }
}

impl Stored {
    /// Keeps `image` at the recipe's resize when it is larger, as it is
    /// otherwise (resized when a batch is made, with the same result).
    pub fn new(image: RgbImage, recipe: &Recipe) -> Self {
        let (w, h) = image.dimensions();
        let (rw, rh) = target_dims(w, h, recipe);
        if (rw as u64) * (rh as u64) < (w as u64) * (h as u64) {
            Self {
                image: image::imageops::resize(&image, rw, rh, recipe.resample.filter()),
            }
        } else {
            Self { image }
        }
    }

    /// The image resized so its shorter side is `recipe.resize`.
    fn resized(&self, recipe: &Recipe) -> std::borrow::Cow<'_, RgbImage> {
        let (w, h) = self.image.dimensions();
        let (rw, rh) = target_dims(w, h, recipe);
        if (rw, rh) == (w, h) {
            std::borrow::Cow::Borrowed(&self.image)
        } else {
            std::borrow::Cow::Owned(image::imageops::resize(
                &self.image,
                rw,
                rh,
                recipe.resample.filter(),
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
                let patch = image::imageops::resize(&view, c, c, recipe.resample.filter());
                (patch, rng.uniform() < 0.5)
            }
        };
        let plane = (c * c) as usize;
        let mean = recipe.mean.map(|m| m as f32);
        let std = recipe.std.map(|s| s as f32);
        let source: [usize; 3] = match recipe.channels {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        // x / 255 as before for the default factor (bit for bit), x * factor otherwise
        let (div, factor) = if recipe.rescale_factor == DEFAULT_RESCALE {
            (255.0f32, 1.0f32)
        } else {
            (1.0, recipe.rescale_factor as f32)
        };
        for (x, y, p) in patch.enumerate_pixels() {
            let xx = if flip { c - 1 - x } else { x };
            let at = (y * c + xx) as usize;
            for ch in 0..3 {
                out[ch * plane + at] = (p.0[source[ch]] as f32 * factor / div - mean[ch]) / std[ch];
            }
        }
    }
}

/// torchvision's `CenterCrop` of a resized image (offsets
/// `round((side - crop) / 2)`); an image smaller than the crop is padded
/// with zeros first, as torchvision does.
/// Where a centre crop of `crop` starts on a side of `side` pixels, as
/// torchvision's `center_crop` puts it: Python's `round((side - crop) / 2)`,
/// which rounds halves to even (73 -> 64 starts at 4, not 5); a side
/// shorter than the crop is padded with `(crop - side) // 2` zeros first.
fn crop_offset(side: u32, crop: u32) -> i64 {
    let d = side as i64 - crop as i64;
    if d < 0 {
        return -((-d) / 2);
    }
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

fn center_crop(img: &RgbImage, crop: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::new(crop, crop);
    let off = |side: u32| crop_offset(side, crop);
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
mod tests;
