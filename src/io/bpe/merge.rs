//! Byte-pair encoding of one word: start from one token per byte, then keep applying the
//! highest-priority merge among adjacent pairs (leftmost on a tie) until none applies. A heap
//! of candidate pairs and a linked list of symbols make a word of n bytes cost O(n log n).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Merge rules: the pair of token ids → (priority, lower first; the merged token's id).
pub(crate) type Merges = HashMap<(u32, u32), (u32, u32)>;

const NONE: usize = usize::MAX;

/// One symbol of the word being merged, in a doubly linked list over the starting positions.
#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: usize,
    next: usize,
    /// False once merged into the symbol before it.
    alive: bool,
}

/// Merges `ids` (one per byte, in order) in place into the word's tokens.
pub(crate) fn merge(merges: &Merges, ids: &mut Vec<u32>) {
    let n = ids.len();
    let mut symbols: Vec<Symbol> = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Symbol {
            id,
            prev: i.checked_sub(1).unwrap_or(NONE),
            next: if i + 1 < n { i + 1 } else { NONE },
            alive: true,
        })
        .collect();
    // (priority, position of the pair's left symbol, merged id), smallest first.
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<_>, symbols: &[Symbol], left: usize| {
        let right = symbols[left].next;
        if right != NONE {
            if let Some(&(rank, merged)) = merges.get(&(symbols[left].id, symbols[right].id)) {
                heap.push(Reverse((rank, left, merged)));
            }
        }
    };
    for left in 0..n {
        push(&mut heap, &symbols, left);
    }
    while let Some(Reverse((rank, left, merged))) = heap.pop() {
        let right = symbols[left].next;
        // Skip a pair that a merge since its push has changed.
        if !symbols[left].alive
            || right == NONE
            || merges.get(&(symbols[left].id, symbols[right].id)) != Some(&(rank, merged))
        {
            continue;
        }
        symbols[left].id = merged;
        symbols[right].alive = false;
        let after = symbols[right].next;
        symbols[left].next = after;
        if after != NONE {
            symbols[after].prev = left;
        }
        let before = symbols[left].prev;
        if before != NONE {
            push(&mut heap, &symbols, before);
        }
        push(&mut heap, &symbols, left);
    }
    ids.clear();
    ids.extend(symbols.iter().filter(|s| s.alive).map(|s| s.id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_merges_by_priority_leftmost_first() {
        // Tokens: a=0 b=1 c=2; ab=3 (priority 1), bc=4 (0), aa=5 (2), abc=6 (3).
        let merges: Merges = [
            ((0, 1), (1, 3)),
            ((1, 2), (0, 4)),
            ((0, 0), (2, 5)),
            ((3, 2), (3, 6)),
        ]
        .into_iter()
        .collect();
        let run = |ids: &[u32]| {
            let mut ids = ids.to_vec();
            merge(&merges, &mut ids);
            ids
        };
        assert_eq!(run(&[0, 1, 2]), [0, 4]); // bc outranks ab
        assert_eq!(run(&[0, 1, 0, 1]), [3, 3]);
        assert_eq!(run(&[0, 0, 0]), [5, 0]); // leftmost first
        assert_eq!(run(&[2, 0, 1]), [2, 3]);
        assert!(run(&[]).is_empty());
    }
}
