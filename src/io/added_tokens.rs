//! Tokens matched whole in the raw text before anything else runs (`[CLS]` for BERT,
//! `<|im_start|>` for SmolLM2): the text is cut around them, and only the pieces between go
//! through normalisation, splitting and the vocabulary model. Matching is leftmost-longest, as
//! in Hugging Face's `tokenizers` (its `AddedVocabulary`), so `<|im_start|>` wins over a shorter
//! token that is its prefix.

/// A piece of text after cutting out the added tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Ordinary text, never empty.
    Text(&'a str),
    /// An added token, by id.
    Token(u32),
}

/// The added tokens of a tokenizer, bucketed by first byte, longest first within a bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct AddedTokens {
    by_first_byte: Vec<Vec<(Box<str>, u32)>>,
}

impl AddedTokens {
    /// From (content, id) pairs; empty contents are dropped (they could match everywhere).
    pub(crate) fn new<S: AsRef<str>>(tokens: impl IntoIterator<Item = (S, u32)>) -> Self {
        let mut by_first_byte: Vec<Vec<(Box<str>, u32)>> = vec![Vec::new(); 256];
        for (content, id) in tokens {
            let content = content.as_ref();
            if let Some(&first) = content.as_bytes().first() {
                by_first_byte[first as usize].push((Box::from(content), id));
            }
        }
        for bucket in &mut by_first_byte {
            bucket.sort_by_key(|(content, _)| std::cmp::Reverse(content.len()));
        }
        Self { by_first_byte }
    }

    /// Cuts `text` into ordinary text and added tokens, in order.
    pub(crate) fn split<'a>(&self, text: &'a str) -> Vec<Piece<'a>> {
        let mut pieces = Vec::new();
        let (mut start, mut at) = (0, 0);
        while at < text.len() {
            match self.longest_at(&text[at..]) {
                Some((len, id)) => {
                    if start < at {
                        pieces.push(Piece::Text(&text[start..at]));
                    }
                    pieces.push(Piece::Token(id));
                    at += len;
                    start = at;
                }
                // Contents are whole strings, so a match can only start on a character boundary.
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }

    /// The longest token `rest` starts with: (its length in bytes, its id).
    fn longest_at(&self, rest: &str) -> Option<(usize, u32)> {
        let first = *rest.as_bytes().first()?;
        self.by_first_byte
            .get(first as usize)?
            .iter()
            .find(|(content, _)| rest.starts_with(&**content))
            .map(|(content, id)| (content.len(), *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_around_the_leftmost_longest_token() {
        let added = AddedTokens::new([("<a>", 1), ("<a>b", 2), ("", 3), ("é", 4)]);
        assert_eq!(
            added.split("x<a>by<a>é"),
            [
                Piece::Text("x"),
                Piece::Token(2),
                Piece::Text("y"),
                Piece::Token(1),
                Piece::Token(4)
            ]
        );
        assert_eq!(added.split("plain ü"), [Piece::Text("plain ü")]);
        assert_eq!(added.split(""), []);
    }
}
