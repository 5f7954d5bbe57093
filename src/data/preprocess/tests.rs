//! Tests of image decoding, the recipes and the augmentations.

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
fn crop_offsets_round_halves_to_even_as_torchvision() {
    // torchvision: int(round((side - crop) / 2.0)), Python rounding halves to even
    for (side, crop, want) in [
        (73, 64, 4),
        (75, 64, 6),
        (256, 224, 16),
        (342, 299, 22),
        (341, 299, 21),
        (64, 64, 0),
        (65, 64, 0),
        (67, 64, 2),
        (61, 64, -1),
        (60, 64, -2),
    ] {
        assert_eq!(crop_offset(side, crop), want, "side {side}, crop {crop}");
    }
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
        ..Recipe::imagenet(2)
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
        rescale_factor: 0.0,
        ..Recipe::imagenet(4)
    };
    assert!(
        bad.check()
            .unwrap_err()
            .to_string()
            .contains("rescale_factor")
    );
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
fn grey_rgba_and_16_bit_images_become_the_same_rgb() {
    use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgba};
    let png = |img: DynamicImage| {
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        decode_bytes(&bytes, Path::new("mixed.png")).unwrap()
    };
    let values = [0u8, 100, 200, 255];
    let at = |x: u32, y: u32| values[(y * 2 + x) as usize];
    let grey = png(DynamicImage::ImageLuma8(ImageBuffer::from_fn(
        2,
        2,
        |x, y| Luma([at(x, y)]),
    )));
    let grey_alpha = png(DynamicImage::ImageLumaA8(ImageBuffer::from_fn(
        2,
        2,
        |x, y| LumaA([at(x, y), 17]),
    )));
    let rgba = png(DynamicImage::ImageRgba8(ImageBuffer::from_fn(
        2,
        2,
        |x, y| {
            let v = at(x, y);
            Rgba([v, v, v, 0])
        },
    )));
    let sixteen = png(DynamicImage::ImageLuma16(ImageBuffer::from_fn(
        2,
        2,
        |x, y| Luma([at(x, y) as u16 * 257]),
    )));
    for (x, y, p) in grey.enumerate_pixels() {
        assert_eq!(p.0, [at(x, y); 3], "grey at {x},{y}");
    }
    // alpha is dropped, 16-bit values scale down to the same 8-bit ones
    assert_eq!(grey_alpha, grey);
    assert_eq!(rgba, grey);
    assert_eq!(sixteen, grey);
}

#[test]
fn undecodable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.png");
    std::fs::write(&p, b"not an image").unwrap();
    let err = format!("{:#}", decode(&p).unwrap_err());
    assert!(err.contains("broken.png"), "{err}");
}

mod processor {
    use super::*;

    fn vit_fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/vit_random")
    }

    #[test]
    fn vit_processor_maps_onto_a_stretch_recipe() {
        let r = Recipe::from_preprocessor(&vit_fixture().join("preprocessor_config.json")).unwrap();
        assert_eq!(r, Recipe::vit(32));
        assert_eq!(r.resize_mode, ResizeMode::Stretch);
        assert_eq!((r.resize, r.crop), (32, 32));
        // a model directory without a run's record takes its processor
        assert_eq!(Recipe::for_model(&vit_fixture(), "vit", None).unwrap(), r);
        assert_eq!(
            Recipe::for_model(&vit_fixture(), "vit", Some(48)).unwrap(),
            Recipe::vit(48)
        );
        // a bare file takes its family's default
        let file = vit_fixture().join("model.safetensors");
        assert_eq!(
            Recipe::for_model(&file, "vit", None).unwrap(),
            Recipe::vit(224)
        );
        assert_eq!(
            Recipe::for_model(&file, "mobilenet_v2", Some(160)).unwrap(),
            Recipe::imagenet(160)
        );
        // written back, it reads as itself
        let dir = tempfile::tempdir().unwrap();
        for recipe in [Recipe::vit(48), Recipe::imagenet(224)] {
            let p = dir.path().join("preprocessor_config.json");
            std::fs::write(&p, recipe.to_preprocessor().to_string()).unwrap();
            assert_eq!(Recipe::from_preprocessor(&p).unwrap(), recipe);
        }
    }

    #[test]
    fn older_recipes_read_and_write_as_before() {
        let old =
            r#"{"resize":256,"crop":224,"mean":[0.485,0.456,0.406],"std":[0.229,0.224,0.225]}"#;
        let r: Recipe = serde_json::from_str(old).unwrap();
        assert_eq!(r, Recipe::imagenet(224));
        assert_eq!(serde_json::to_string(&r).unwrap(), old);
        let vit = serde_json::to_value(Recipe::vit(224)).unwrap();
        assert_eq!(vit["resize_mode"], "stretch");
        assert!(vit.get("resample").is_none());
    }

    #[test]
    fn processor_options_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("preprocessor_config.json");
        let read = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Recipe::from_preprocessor(&p)
        };
        let r = read(
            r#"{"size": {"shortest_edge": 256}, "do_center_crop": true,
                "crop_size": {"height": 224, "width": 224}, "resample": 3,
                "do_rescale": false, "do_normalize": false}"#,
        )
        .unwrap();
        assert_eq!(r.resize_mode, ResizeMode::Shorter);
        assert_eq!((r.resize, r.crop), (256, 224));
        assert_eq!(r.resample, Resample::Bicubic);
        assert_eq!(r.rescale_factor, 1.0);
        assert_eq!((r.mean, r.std), ([0.0; 3], [1.0; 3]));
        let r = read(r#"{"size": 384, "image_mean": 0.5, "image_std": [0.2, 0.3, 0.4]}"#).unwrap();
        assert_eq!(
            (r.resize, r.crop, r.resize_mode),
            (384, 384, ResizeMode::Stretch)
        );
        assert_eq!(r.std, [0.2, 0.3, 0.4]);
        for (text, says) in [
            (r#"{"size": {"height": 224, "width": 256}}"#, "only square"),
            (r#"{"do_resize": false}"#, "do_resize"),
            (r#"{"resample": 5}"#, "resample 5"),
            (r#"{"size": {"shortest_edge": 256}}"#, "do_center_crop"),
            (r#"{"image_std": [0.5, 0.5]}"#, "image_std"),
            (r#"{"image_std": [0.5, 0.0, 0.5]}"#, "positive"),
        ] {
            let err = format!("{:#}", read(text).unwrap_err());
            assert!(
                err.contains(says) && err.contains("preprocessor_config.json"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn stretched_images_match_transformers_processor() {
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision/vit_random.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let (w, h) = (40u32, 24u32);
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 6) % 256) as u8,
                ((y * 10) % 256) as u8,
                ((x * y) % 256) as u8,
            ])
        });
        let recipe = Recipe::vit(32);
        let mut out = vec![0f32; 3 * 32 * 32];
        Stored::new(img, &recipe).write(&recipe, None, &mut out);
        let want = &reference["processor"];
        // PIL's and the image crate's bilinear round to 8 bits alike, up to
        // one level (2/255 after normalising with std 0.5)
        for (key, sum_key) in [("pil_first", "pil_sum"), ("first", "sum")] {
            let first: Vec<f64> = want[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            for (a, b) in out.iter().zip(&first) {
                assert!(
                    (*a as f64 - b).abs() <= 2.0 / 255.0 + 1e-6,
                    "{key}: {a} vs {b}"
                );
            }
            let sum: f64 = out.iter().map(|v| *v as f64).sum();
            let mean_diff = (sum - want[sum_key].as_f64().unwrap()).abs() / out.len() as f64;
            assert!(mean_diff < 2e-3, "{sum_key}: mean difference {mean_diff}");
        }
    }
}
