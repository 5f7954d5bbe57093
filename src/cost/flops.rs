//! FLOPs of a training step from the FLOPs of its parts, for any family.
//!
//! One multiply-add is 2 FLOPs; each family counts the forward FLOPs of its
//! layer groups ([`crate::models::Architecture::group_flops`]; BERT's
//! encoder layer is 2·b·s·(4h² + 2hf) + 4·b·s²·h), each task its head's.
//! Elementwise work (softmax, GELU, LayerNorm) is ignored, as is usual.
//!
//! Backward: a trainable group costs 2× its forward (gradients of its weights
//! and of its input). A frozen group *above* a trainable one costs 1× (only
//! the input gradient flows through it). A frozen prefix costs nothing in
//! backward: no gradient is needed below the first trainable group; read
//! from a feature cache it costs nothing in forward either.
//!
//! LoRA ([`lora_step_flops`]): every base weight is frozen, so a group
//! above the frozen prefix costs 1x its forward in backward (input
//! gradients only, no weight-gradient products), while its adapters cost
//! forward + 2x (input and weight gradients) like any trainable matrix.

/// FLOPs of one training step: forward through every group and the head,
/// backward as the module doc says. `trainable[g]` for each group; the
/// head always trains, its backward costing `head_backward` (twice its
/// forward, unless parts of it are frozen: [`crate::tasks::Task::head_backward_flops`]).
/// `cached`: the frozen prefix is read, not computed.
pub fn train_step_flops(
    group_forward: &[f64],
    head_forward: f64,
    head_backward: f64,
    trainable: &[bool],
    cached: bool,
) -> f64 {
    let frozen = trainable.iter().take_while(|t| !**t).count();
    let forward: f64 = group_forward.iter().sum::<f64>() + head_forward;
    let backward: f64 = group_forward
        .iter()
        .zip(trainable)
        .skip(frozen)
        .map(|(f, &t)| if t { 2.0 * f } else { *f })
        .sum::<f64>()
        + head_backward;
    let prefix: f64 = if cached {
        group_forward[..frozen].iter().sum()
    } else {
        0.0
    };
    forward + backward - prefix
}

/// FLOPs of one LoRA training step: `adapter_forward[g]` is the forward
/// FLOPs of group g's adapters (`2 * tokens * r * (in + out)` each); base
/// weights of every group are frozen, so groups above the frozen prefix
/// pass input gradients only; adapters and the head train.
pub fn lora_step_flops(
    group_forward: &[f64],
    adapter_forward: &[f64],
    head_forward: f64,
    head_backward: f64,
    trainable: &[bool],
    cached: bool,
) -> f64 {
    let frozen = trainable.iter().take_while(|t| !**t).count();
    let forward: f64 =
        group_forward.iter().sum::<f64>() + adapter_forward.iter().sum::<f64>() + head_forward;
    let backward: f64 = group_forward
        .iter()
        .zip(adapter_forward)
        .skip(frozen)
        .map(|(f, a)| f + 2.0 * a)
        .sum::<f64>()
        + head_backward;
    let prefix: f64 = if cached {
        group_forward[..frozen].iter().sum()
    } else {
        0.0
    };
    forward + backward - prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_step_counts_no_weight_gradients_of_frozen_matrices() {
        // one layer: hidden 4, FFN 8, on 1 x 2 tokens; adapters r = 2 on
        // query and value (4 -> 4 each): 2 * 2 * 2 * (4 + 4) each
        let (h, f, tokens) = (4.0, 8.0, 2.0);
        let layer = 2.0 * tokens * (4.0 * h * h + 2.0 * h * f) + 4.0 * tokens * tokens * h;
        let adapters = 2.0 * (2.0 * tokens * 2.0 * (h + h));
        assert_eq!(adapters, 128.0);
        let groups = [10.0, layer, 6.0];
        let adapter = [0.0, adapters, 0.0];
        let head = 3.0;
        let t = [false, true, true];
        // forward: all + adapters + head; backward: the layer and the top
        // group pass input gradients (1x), adapters and head cost 2x
        let want =
            (10.0 + layer + 6.0 + adapters + head) + (layer + 2.0 * adapters) + 6.0 + 2.0 * head;
        assert_eq!(
            lora_step_flops(&groups, &adapter, head, 2.0 * head, &t, false),
            want
        );
        // cheaper than a full fine-tune of the same groups
        assert!(want < train_step_flops(&groups, head, 2.0 * head, &t, false));
        // the cached embeddings cost nothing
        assert_eq!(
            lora_step_flops(&groups, &adapter, head, 2.0 * head, &t, true),
            want - 10.0
        );
    }

    /// MiniLM-L6 (h 384, f 1536) on 16 x 128, two labels: embeddings, six
    /// layers, pooler; the classifier is the head.
    fn minilm(batch: f64, seq: f64) -> (Vec<f64>, f64, f64) {
        let (h, f) = (384.0, 1536.0);
        let layer = 2.0 * batch * seq * (4.0 * h * h + 2.0 * h * f) + 4.0 * batch * seq * seq * h;
        let mut g = vec![0.0];
        g.extend([layer; 6]);
        g.push(2.0 * batch * h * h);
        (g, 2.0 * batch * h * 2.0, layer)
    }

    #[test]
    fn minilm_step_flops_match_the_published_formula() {
        let (g, head, layer) = minilm(16.0, 128.0);
        let top = g[7] + head;
        assert_eq!(
            layer,
            2.0 * 2048.0 * (4.0 * 147456.0 + 2.0 * 589824.0) + 4.0 * 16.0 * 16384.0 * 384.0
        );
        let all = vec![true; 8];
        assert_eq!(
            train_step_flops(&g, head, 2.0 * head, &all, false),
            3.0 * (6.0 * layer + top)
        );
        // freeze:4 -> layers 4, 5 and the top train: forward + 2x those
        let mut f4 = vec![false; 8];
        f4[5..].iter_mut().for_each(|t| *t = true);
        assert_eq!(
            train_step_flops(&g, head, 2.0 * head, &f4, false),
            6.0 * layer + top + 2.0 * (2.0 * layer + top)
        );
        // head only
        let mut h = vec![false; 8];
        h[7] = true;
        assert_eq!(
            train_step_flops(&g, head, 2.0 * head, &h, false),
            6.0 * layer + 3.0 * top
        );
        // ~137.7 GFLOP for the full step, as the PyTorch script counts
        assert!((train_step_flops(&g, head, 2.0 * head, &all, false) / 1e9 - 137.72).abs() < 0.01);
    }

    #[test]
    fn cached_steps_skip_the_frozen_forward() {
        let (g, head, layer) = minilm(1.0, 2.0);
        let top = g[7] + head;
        let mut f1 = vec![false; 8];
        f1[2..].iter_mut().for_each(|t| *t = true);
        assert_eq!(
            train_step_flops(&g, head, 2.0 * head, &f1, true),
            3.0 * (5.0 * layer + top)
        );
        let mut h = vec![false; 8];
        h[7] = true;
        assert_eq!(train_step_flops(&g, head, 2.0 * head, &h, true), 3.0 * top);
    }

    #[test]
    fn frozen_layer_above_trainable_costs_input_gradient_only() {
        // embeddings train, every layer above is frozen: it passes gradients down
        let (g, head, layer) = minilm(1.0, 8.0);
        let mut t = vec![false; 8];
        t[0] = true;
        t[7] = true;
        assert_eq!(
            train_step_flops(&g, head, 2.0 * head, &t, false),
            2.0 * 6.0 * layer + 3.0 * (g[7] + head)
        );
    }
}
