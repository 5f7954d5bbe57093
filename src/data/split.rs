//! Seeded orders and splits: the same seed gives the same epochs and the
//! same held-out examples on every machine.

use crate::data::table::Example;
use crate::models::params::SeededRng;

/// A permutation of 0..n that depends only on the seed and the epoch.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = SeededRng::new(seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Per label, a seeded shuffle; `fraction` of each label goes to the second part.
pub fn stratified_split(
    examples: Vec<Example>,
    fraction: f64,
    seed: u64,
) -> (Vec<Example>, Vec<Example>) {
    stratified_split_by(examples, |e| e.label.clone(), fraction, seed)
}

/// [`stratified_split`] of any items, grouped by `label(item)`: per label
/// (in the labels' order), a seeded shuffle; `fraction` (rounded) of each
/// label goes to the second part. Both parts keep the items' order.
pub fn stratified_split_by<T, L: Ord>(
    examples: Vec<T>,
    label: impl Fn(&T) -> L,
    fraction: f64,
    seed: u64,
) -> (Vec<T>, Vec<T>) {
    let mut by_label: std::collections::BTreeMap<L, Vec<usize>> = Default::default();
    for (i, e) in examples.iter().enumerate() {
        by_label.entry(label(e)).or_default().push(i);
    }
    let mut rng = SeededRng::new(seed ^ 0x5EED_5EED);
    let mut is_val = vec![false; examples.len()];
    for idx in by_label.values_mut() {
        for i in (1..idx.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let k = (idx.len() as f64 * fraction).round() as usize;
        for &i in idx.iter().take(k) {
            is_val[i] = true;
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (e, v) in examples.into_iter().zip(is_val) {
        if v { b.push(e) } else { a.push(e) }
    }
    (a, b)
}

/// A seeded subset of `limit` items of `items`, in their original order.
pub fn seeded_subset<T: Clone>(items: &[T], limit: usize, seed: u64) -> Vec<T> {
    if limit >= items.len() {
        return items.to_vec();
    }
    let mut keep: Vec<usize> = epoch_order(items.len(), seed, usize::MAX)
        .into_iter()
        .take(limit)
        .collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| items[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 1, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 1, 0));
        assert_ne!(a, epoch_order(100, 1, 1));
        assert_ne!(a, epoch_order(100, 2, 0));
    }

    #[test]
    fn stratified_split_keeps_label_shares() {
        let ex: Vec<Example> = (0..100)
            .map(|i| Example {
                text: format!("t{i}"),
                label: if i < 30 { "a".into() } else { "b".into() },
                line: i + 2,
            })
            .collect();
        let (t, v) = stratified_split(ex, 0.1, 3);
        assert_eq!(v.len(), 10);
        assert_eq!(v.iter().filter(|e| e.label == "a").count(), 3);
        assert_eq!(t.len(), 90);
    }

    #[test]
    fn subsets_keep_order_and_size() {
        let items: Vec<usize> = (0..50).collect();
        let s = seeded_subset(&items, 10, 4);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(s, seeded_subset(&items, 10, 4));
        assert_eq!(seeded_subset(&items, 80, 4), items);
    }
}
