//! WordPiece: each word becomes the longest vocabulary entry it starts with, then the longest
//! `##`-prefixed entry the rest starts with, and so on; a word that cannot be covered this way,
//! or is longer than the limit, becomes the unknown token.

use std::collections::HashMap;

/// The `WordPiece` model of a tokenizer.json.
#[derive(Debug, Clone)]
pub(crate) struct WordPiece {
    pub vocab: HashMap<String, u32>,
    pub unk: u32,
    /// Marks a piece that continues a word (`##`).
    pub prefix: String,
    /// Words of more characters than this are unknown outright (100 for BERT).
    pub max_chars: usize,
}

impl WordPiece {
    /// Appends the ids of one word (no whitespace inside) to `out`.
    pub(crate) fn push_ids(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().count() > self.max_chars {
            out.push(self.unk);
            return;
        }
        let first = out.len();
        let mut piece = String::new();
        let mut start = 0;
        while start < word.len() {
            // Greedy: shrink the candidate from the end, one character at a time.
            let mut end = word.len();
            let id = loop {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(&piece) {
                    break Some(id);
                }
                match word[start..end].char_indices().next_back() {
                    Some((last, _)) if last > 0 => end = start + last,
                    _ => break None,
                }
            };
            match id {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(first);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_pieces_first_else_unknown() {
        let vocab = ["un", "##aff", "##able", "a", "##ff", "é"]
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32 + 1))
            .collect();
        let model = WordPiece {
            vocab,
            unk: 0,
            prefix: "##".into(),
            max_chars: 8,
        };
        let ids = |word: &str| {
            let mut out = vec![99];
            model.push_ids(word, &mut out);
            out
        };
        assert_eq!(ids("unaffable"), [99, 0]); // 9 characters > 8
        assert_eq!(ids("unaff"), [99, 1, 2]);
        assert_eq!(ids("affable"), [99, 4, 5, 3]);
        assert_eq!(ids("unx"), [99, 0]);
        assert_eq!(ids("é"), [99, 6]);
    }
}
