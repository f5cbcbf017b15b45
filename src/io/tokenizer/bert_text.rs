//! BERT's text clean-up and word split, as Hugging Face's `BertNormalizer` and
//! `BertPreTokenizer` do them. The Unicode tables are the ones that library uses
//! (`unicode_categories` and `unicode-normalization-alignments`, Unicode 9), so that every
//! character — an emoji newer than Unicode 9 is "unassigned" there, and so dropped — is treated
//! exactly as in the tokenizer the model was trained with.

use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// The `BertNormalizer` of a tokenizer.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BertNormalizer {
    /// Drop control characters, NUL and U+FFFD; turn every whitespace character into a space.
    pub clean_text: bool,
    /// Put spaces around CJK ideographs, so that each becomes a word.
    pub handle_chinese_chars: bool,
    /// Decompose (NFD) and drop non-spacing marks: "café" → "cafe".
    pub strip_accents: bool,
    pub lowercase: bool,
}

impl BertNormalizer {
    /// The four steps in the library's order: clean, CJK, accents, lowercase.
    pub(crate) fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            let c = match self.clean_text {
                true if c == '\0' || c == '\u{fffd}' || is_control(c) => continue,
                true if is_whitespace(c) => ' ',
                _ => c,
            };
            if self.handle_chinese_chars && is_chinese_char(c) {
                out.extend([' ', c, ' ']);
            } else {
                out.push(c);
            }
        }
        if self.strip_accents {
            out = out
                .nfd()
                .map(|(c, _)| c)
                .filter(|c| !c.is_mark_nonspacing())
                .collect();
        }
        if self.lowercase {
            out = out.chars().flat_map(char::to_lowercase).collect();
        }
        out
    }
}

/// `BertPreTokenizer`: split on whitespace (dropped), then cut every punctuation character out
/// as a word of its own.
pub(crate) fn split_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for chunk in text.split(char::is_whitespace) {
        let mut start = 0;
        for (at, c) in chunk.char_indices() {
            if is_punctuation(c) {
                if start < at {
                    words.push(&chunk[start..at]);
                }
                let end = at + c.len_utf8();
                words.push(&chunk[at..end]);
                start = end;
            }
        }
        if start < chunk.len() {
            words.push(&chunk[start..]);
        }
    }
    words
}

fn is_whitespace(c: char) -> bool {
    c.is_whitespace() // '\t', '\n' and '\r' included
}

/// Unicode's "Other" categories (Cc, Cf, Cn, Co, Cs), except the three whitespace controls.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// ASCII punctuation (which includes symbols such as `$` and `^`) or Unicode's P categories.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// The CJK ideograph blocks, as the library lists them (its fifth range starts at U+2B920,
/// not at U+2B820 as in the original BERT code; the reference decides).
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BERT: BertNormalizer = BertNormalizer {
        clean_text: true,
        handle_chinese_chars: true,
        strip_accents: true,
        lowercase: true,
    };

    #[test]
    fn normalizes_as_bert_does() {
        assert_eq!(BERT.normalize("Café\tNAÏVE\u{0}\u{200b}x"), "cafe naivex");
        assert_eq!(BERT.normalize("東京"), " 東  京 ");
        assert_eq!(BERT.normalize("İ"), "i"); // NFD gives I + U+0307, a non-spacing mark
    }

    #[test]
    fn splits_words_and_punctuation() {
        assert_eq!(
            split_words("Wow... it's $3.99 — ok "),
            ["Wow", ".", ".", ".", "it", "'", "s", "$", "3", ".", "99", "—", "ok"]
        );
    }
}
