//! The FID port's TensorFlow names (`net.layers.mixed_4.tower_1.conv_2.beta`)
//! read as torchvision's (`Mixed_6b.branch7x7dbl_3.bn.bias`).

use std::collections::BTreeMap;

use super::{Kind, MIXED, STEM};
use crate::hub::{Checkpoint, HostTensor};

/// Whether `c` holds the FID port's TensorFlow names.
pub(super) fn is_tf_port(c: &Checkpoint) -> bool {
    [
        "net.layers.conv.weight",
        "net.layers.mixed.tower.conv.weight",
        "net.layers.mixed_10.tower_2_conv.weight",
    ]
    .iter()
    .all(|k| c.tensors.contains_key(*k))
}

/// torchvision's name of the FID port's layer `name` (without
/// `net.layers.` and the tensor suffix): `mixed_4.tower_1.conv_2` is
/// `Mixed_6b.branch7x7dbl_3`, `conv_3` is `Conv2d_3b_1x1`.
pub(super) fn tf_layer(name: &str) -> Option<String> {
    let (block, rest) = match name.split_once('.') {
        Some((b, r)) => (b, Some(r)),
        None => (name, None),
    };
    let index = |s: &str, stem: &str| -> Option<usize> {
        if s == stem {
            Some(0)
        } else {
            s.strip_prefix(stem)?.strip_prefix('_')?.parse().ok()
        }
    };
    if let (Some(i), None) = (index(block, "conv"), rest) {
        return STEM.get(i).map(|s| s.to_string());
    }
    let j = index(block, "mixed")?;
    let kind = *[
        Kind::A,
        Kind::A,
        Kind::A,
        Kind::B,
        Kind::C,
        Kind::C,
        Kind::C,
        Kind::C,
        Kind::D,
        Kind::E,
        Kind::E,
    ]
    .get(j)?;
    let rest = rest?;
    // (branch, conv) in torchvision's order for each TensorFlow tower name
    let (branch, k) = match (kind, rest) {
        (Kind::E, "conv") => (0, 0),
        (Kind::E, "tower_conv") => (1, 0),
        (Kind::E, "tower_mixed_conv") => (1, 1),
        (Kind::E, "tower_mixed_conv_1") => (1, 2),
        (Kind::E, "tower_1_conv") => (2, 0),
        (Kind::E, "tower_1_conv_1") => (2, 1),
        (Kind::E, "tower_1_mixed_conv") => (2, 2),
        (Kind::E, "tower_1_mixed_conv_1") => (2, 3),
        (Kind::E, "tower_2_conv") => (3, 0),
        (_, r) => {
            let (tower, conv) = match r.split_once('.') {
                Some((t, c)) => (Some(t), c),
                None => (None, r),
            };
            let k = index(conv, "conv")?;
            // A, B and C start with a lone convolution (`conv`, branch 0)
            // and number their towers from branch 1; D has towers only
            let offset = usize::from(kind != Kind::D);
            let branch = match tower {
                None if offset == 1 => 0,
                None => return None,
                Some(t) => index(t, "tower")? + offset,
            };
            (branch, k)
        }
    };
    kind.names()
        .get(branch)?
        .get(k)
        .map(|n| format!("{}.{n}", MIXED[j]))
}

/// The FID port's checkpoint under torchvision's names: `X.weight` is
/// `T.conv.weight`, `X.beta`/`mean`/`var` are `T.bn.bias`/`running_mean`/
/// `running_var`, and `T.bn.weight` is 1 (the port's BatchNorm has no
/// scale). `None` when `c` is not the port.
pub fn tf_to_torchvision(c: &Checkpoint) -> Option<Checkpoint> {
    if !is_tf_port(c) {
        return None;
    }
    let mut tensors = BTreeMap::new();
    let mut mapped = 0usize;
    for (name, t) in &c.tensors {
        let renamed = name.strip_prefix("net.layers.").and_then(|rest| {
            let (layer, field) = rest.rsplit_once('.')?;
            let target = tf_layer(layer)?;
            let field = match field {
                "weight" => "conv.weight",
                "beta" => "bn.bias",
                "mean" => "bn.running_mean",
                "var" => "bn.running_var",
                _ => return None,
            };
            Some((target, field))
        });
        match renamed {
            Some((target, field)) => {
                if field == "bn.bias" {
                    tensors.insert(
                        format!("{target}.bn.weight"),
                        HostTensor {
                            shape: t.shape.clone(),
                            dtype: crate::hub::DType::F32,
                            data: vec![1.0; t.numel()],
                        },
                    );
                }
                tensors.insert(format!("{target}.{field}"), t.clone());
                mapped += 1;
            }
            None => {
                tensors.insert(name.clone(), t.clone());
            }
        }
    }
    let mut notes = c.notes.clone();
    notes.push(format!(
        "the TensorFlow FID Inception v3's names mapped to torchvision's ({mapped} tensors; \
         BatchNorm without scale loads with scale 1)"
    ));
    Some(Checkpoint {
        tensors,
        files: c.files.clone(),
        notes,
        graph: c.graph.clone(),
    })
}
