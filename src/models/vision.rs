//! The image families this build implements, in one place.
//!
//! Commands that take any image family (`train`, `eval`, `predict`,
//! `compare`, `bench`) pick the Rust type from a family name with
//! [`with_image_family!`](crate::with_image_family); a bare weights file's
//! family comes from `--arch` ([`family_for_arch`]) or from its tensor
//! names ([`family_of_checkpoint`]). A new family adds one line to
//! [`IMAGE_FAMILIES`] and one arm to the macro.

use super::Architecture;
use crate::hub::Checkpoint;

/// Image families by `model_type`, in the order `--arch` help lists them.
pub const IMAGE_FAMILIES: &[&str] = &[
    "mobilenet_v2",
    "vgg16",
    "resnet",
    "inception_v3",
    "efficientnet_lite0",
    "vit",
];

/// Runs `$body` with the type alias `$A` naming the image family whose
/// `model_type` is `$family` (a `&str`), or evaluates `$other` for a name
/// that is not an image family.
#[macro_export]
macro_rules! with_image_family {
    ($family:expr, $A:ident => $body:expr, else $other:expr) => {
        match $family {
            "mobilenet_v2" => {
                type $A = $crate::models::mobilenet_v2::MobileNetV2;
                $body
            }
            "vgg16" => {
                type $A = $crate::models::vgg::Vgg16;
                $body
            }
            "resnet" => {
                type $A = $crate::models::resnet::ResNet;
                $body
            }
            "inception_v3" => {
                type $A = $crate::models::inception::InceptionV3;
                $body
            }
            "efficientnet_lite0" => {
                type $A = $crate::models::efficientnet::EfficientNetLite;
                $body
            }
            "vit" => {
                type $A = $crate::models::vit::Vit;
                $body
            }
            _ => $other,
        }
    };
}

/// Whether `family` (a `model_type`) is an image family.
pub fn is_image_family(family: &str) -> bool {
    IMAGE_FAMILIES.contains(&family)
}

/// The image family an `--arch` name selects: its `model_type`
/// (`mobilenet_v2`) or one of its variants' names ([`Architecture::ARCH_NAMES`]:
/// `resnet50`). Case, `-` and `_` are ignored.
pub fn family_for_arch(arch: &str) -> Option<&'static str> {
    let arch = normalise(arch);
    IMAGE_FAMILIES.iter().copied().find(|&f| {
        f == arch
            || with_image_family!(f, A => <A as Architecture>::ARCH_NAMES.contains(&arch.as_str()), else false)
    })
}

/// Every `--arch` name an image family answers to, for error messages.
pub fn arch_names() -> Vec<&'static str> {
    let mut names = Vec::new();
    for &f in IMAGE_FAMILIES {
        names.push(f);
        with_image_family!(f, A => names.extend(<A as Architecture>::ARCH_NAMES.iter().copied().filter(|n| *n != f)), else ());
    }
    names
}

/// The image family that recognises a bare file's tensors
/// ([`Architecture::recognises`]), when one and only one does.
pub fn family_of_checkpoint(checkpoint: &Checkpoint) -> Option<&'static str> {
    let mut found = IMAGE_FAMILIES.iter().copied().filter(
        |&f| with_image_family!(f, A => <A as Architecture>::recognises(checkpoint), else false),
    );
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The recipe a model directory records (`preprocessing` in its
/// `config.json`, or a `preprocessor_config.json`), at `side` pixels when
/// given; `None` for a bare file or a directory that records none, where a
/// family gives its published recipe.
pub fn recorded_recipe(
    model: &std::path::Path,
    model_type: &str,
    side: Option<u32>,
) -> anyhow::Result<Option<crate::data::preprocess::Recipe>> {
    let records = model.is_dir()
        && (model.join("preprocessor_config.json").is_file()
            || std::fs::read_to_string(model.join("config.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v.get("preprocessing").is_some()));
    if !records {
        return Ok(None);
    }
    crate::data::preprocess::Recipe::for_model(model, model_type, side).map(Some)
}

/// An `--arch` name as the families list it: trimmed, lower case, `_` for `-`.
pub fn normalise(arch: &str) -> String {
    arch.trim().to_ascii_lowercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{DType, HostTensor};

    #[test]
    fn every_listed_family_dispatches_to_its_own_type() {
        for &f in IMAGE_FAMILIES {
            let model_type =
                with_image_family!(f, A => <A as Architecture>::MODEL_TYPE, else "none");
            assert_eq!(model_type, f);
            assert!(
                super::super::SUPPORTED.contains(&f),
                "{f} missing from SUPPORTED"
            );
        }
        assert_eq!(
            with_image_family!("bert", A => <A as Architecture>::MODEL_TYPE, else "none"),
            "none"
        );
    }

    #[test]
    fn arch_names_resolve_to_families() {
        assert_eq!(family_for_arch("MobileNet-V2"), Some("mobilenet_v2"));
        assert_eq!(family_for_arch("bert"), None);
        assert_eq!(family_for_arch("alexnet"), None);
        assert!(arch_names().contains(&"mobilenet_v2"));
    }

    #[test]
    fn mobilenet_names_are_recognised_and_others_not() {
        let names = |names: &[&str]| Checkpoint {
            tensors: names
                .iter()
                .map(|n| {
                    let t = HostTensor {
                        shape: vec![1, 1, 1, 1],
                        dtype: DType::F32,
                        data: vec![0.0],
                    };
                    (n.to_string(), t)
                })
                .collect(),
            ..Checkpoint::default()
        };
        let mobilenet = names(&[
            "features.18.0.weight",
            "features.1.conv.0.0.weight",
            "features.17.conv.2.weight",
            "classifier.1.weight",
        ]);
        assert_eq!(family_of_checkpoint(&mobilenet), Some("mobilenet_v2"));
        let bert = names(&["bert.embeddings.word_embeddings.weight"]);
        assert_eq!(family_of_checkpoint(&bert), None);
    }
}
