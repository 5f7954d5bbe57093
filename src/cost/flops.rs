//! Analytical FLOP counts for BERT-family training and inference.
//!
//! One multiply-add is 2 FLOPs. For an encoder layer with hidden size h, FFN
//! size f, on b sequences of s tokens, the forward pass costs
//!
//!   2·b·s·(4·h² + 2·h·f)      the Q, K, V, output and two FFN projections
//! + 2·2·b·s²·h                attention scores (QKᵀ) and context (PV)
//!
//! (elementwise work — softmax, GELU, LayerNorm — is ignored, as is usual).
//! The pooler costs 2·b·h², the classifier 2·b·h·k; the embedding lookup ~0.
//!
//! Backward: a trainable group costs 2× its forward (gradients of its weights
//! and of its input). A frozen group *above* a trainable one costs 1× (only
//! the input gradient flows through it). A frozen prefix costs nothing in
//! backward: no gradient is needed below the first trainable group.

/// Sizes that determine the FLOPs of a BERT classifier step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BertShape {
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub labels: usize,
}

impl BertShape {
    /// Forward FLOPs of one encoder layer on `batch` sequences of `seq` tokens.
    pub fn layer_forward(&self, batch: usize, seq: usize) -> f64 {
        let (b, s, h, f) = (
            batch as f64,
            seq as f64,
            self.hidden as f64,
            self.ffn as f64,
        );
        2.0 * b * s * (4.0 * h * h + 2.0 * h * f) + 4.0 * b * s * s * h
    }

    /// Forward FLOPs of the head (pooler + classifier).
    pub fn head_forward(&self, batch: usize) -> f64 {
        let (b, h, k) = (batch as f64, self.hidden as f64, self.labels as f64);
        2.0 * b * h * h + 2.0 * b * h * k
    }

    /// Forward FLOPs of the whole model.
    pub fn forward(&self, batch: usize, seq: usize) -> f64 {
        self.layers as f64 * self.layer_forward(batch, seq) + self.head_forward(batch)
    }

    /// FLOPs of one training step (forward + backward) when the groups
    /// `trainable[0..=layers+1]` (embeddings, layers, head) train.
    pub fn train_step(&self, batch: usize, seq: usize, trainable: &[bool]) -> f64 {
        let first = trainable.iter().position(|t| *t);
        let mut total = self.forward(batch, seq);
        let Some(first) = first else {
            return total;
        };
        // Groups 1..=layers are encoder layers; group layers+1 is the head.
        for (g, &trains) in trainable
            .iter()
            .enumerate()
            .take(self.layers + 2)
            .skip(first.max(1))
        {
            let fwd = if g == self.layers + 1 {
                self.head_forward(batch)
            } else {
                self.layer_forward(batch, seq)
            };
            total += if trains { 2.0 * fwd } else { fwd };
        }
        total
    }
}

impl BertShape {
    /// Forward FLOPs of the bottom `frozen` layer groups (the embedding
    /// lookup counts as nothing, so that is `frozen - 1` encoder layers).
    pub fn prefix_forward(&self, batch: usize, seq: usize, frozen: usize) -> f64 {
        frozen.saturating_sub(1).min(self.layers) as f64 * self.layer_forward(batch, seq)
    }

    /// A training step that reads the frozen prefix's output from a feature
    /// cache: [`BertShape::train_step`] without the prefix's forward.
    pub fn train_step_cached(&self, batch: usize, seq: usize, trainable: &[bool]) -> f64 {
        let frozen = trainable.iter().take_while(|t| !**t).count();
        self.train_step(batch, seq, trainable) - self.prefix_forward(batch, seq, frozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: BertShape = BertShape {
        layers: 6,
        hidden: 384,
        ffn: 1536,
        labels: 2,
    };

    #[test]
    fn layer_forward_by_hand() {
        // b=1, s=2, h=2, f=4: 2*2*(16+16) + 4*4*2 = 128 + 32
        let s = BertShape {
            layers: 1,
            hidden: 2,
            ffn: 4,
            labels: 2,
        };
        assert_eq!(s.layer_forward(1, 2), 160.0);
        assert_eq!(s.head_forward(1), 8.0 + 8.0);
    }

    #[test]
    fn minilm_step_flops_match_the_published_formula() {
        // 16 x 128, one layer: 2*2048*(4*384^2 + 2*384*1536) + 4*16*128^2*384
        let layer = 2.0 * 2048.0 * (4.0 * 147456.0 + 2.0 * 589824.0) + 4.0 * 16.0 * 16384.0 * 384.0;
        assert_eq!(MINILM.layer_forward(16, 128), layer);
        let head = MINILM.head_forward(16);
        let all = vec![true; 8];
        assert_eq!(MINILM.train_step(16, 128, &all), 3.0 * (6.0 * layer + head));
        // freeze:4 -> layers 4, 5 and head train: forward + 2x those
        let mut f4 = vec![false; 8];
        f4[5..].iter_mut().for_each(|t| *t = true);
        assert_eq!(
            MINILM.train_step(16, 128, &f4),
            6.0 * layer + head + 2.0 * (2.0 * layer + head)
        );
        // head only
        let mut h = vec![false; 8];
        h[7] = true;
        assert_eq!(MINILM.train_step(16, 128, &h), 6.0 * layer + 3.0 * head);
        // ~137.7 GFLOP for the full step, as the PyTorch script counts
        assert!((MINILM.train_step(16, 128, &all) / 1e9 - 137.72).abs() < 0.01);
    }

    #[test]
    fn cached_steps_skip_the_frozen_forward() {
        // b=1, s=2, h=2, f=4: a layer is 160 FLOPs forward, the head 16.
        let s = BertShape {
            layers: 3,
            hidden: 2,
            ffn: 4,
            labels: 2,
        };
        // freeze:1 -> groups 0, 1 frozen; layers 1, 2 and head train.
        let t = [false, false, true, true, true];
        assert_eq!(s.prefix_forward(1, 2, 2), 160.0);
        assert_eq!(
            s.train_step(1, 2, &t),
            3.0 * 160.0 + 16.0 + 2.0 * (2.0 * 160.0 + 16.0)
        );
        assert_eq!(s.train_step_cached(1, 2, &t), 3.0 * (2.0 * 160.0 + 16.0));
        // head: everything below is read from the cache; 3x the head alone.
        let h = [false, false, false, false, true];
        assert_eq!(s.train_step_cached(1, 2, &h), 48.0);
        assert_eq!(s.prefix_forward(5, 7, 0), 0.0);
    }

    #[test]
    fn frozen_layer_above_trainable_costs_input_gradient_only() {
        // embeddings train, everything else frozen: every layer above passes gradients down
        let mut t = vec![false; 8];
        t[0] = true;
        let layer = MINILM.layer_forward(1, 8);
        let head = MINILM.head_forward(1);
        assert_eq!(MINILM.train_step(1, 8, &t), 2.0 * (6.0 * layer + head));
    }
}
