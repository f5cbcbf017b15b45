//! The split before BPE: GPT-2's pre-tokenizer regex, written out by hand,
//!
//! ```text
//! 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! ```
//!
//! optionally after cutting every numeric character out on its own (`tokenizer.ggml.pre =
//! "smollm"`: SmolLM2's `Digits(individual_digits)` before `ByteLevel`). Letters and numbers
//! are Unicode's L and N categories; whitespace is Unicode's White_Space, as in the regex.

use unicode_general_category::{get_general_category, GeneralCategory as Cat};

/// Splits `text` into the words BPE sees, in order; their concatenation is `text`.
pub(crate) fn split(text: &str, digits_apart: bool) -> Vec<&str> {
    let mut words = Vec::new();
    if !digits_apart {
        gpt2(text, &mut words);
        return words;
    }
    let mut start = 0;
    for (at, c) in text.char_indices() {
        if c.is_numeric() {
            gpt2(&text[start..at], &mut words);
            let end = at + c.len_utf8();
            words.push(&text[at..end]);
            start = end;
        }
    }
    gpt2(&text[start..], &mut words);
    words
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        return Class::Space;
    }
    match get_general_category(c) {
        Cat::UppercaseLetter
        | Cat::LowercaseLetter
        | Cat::TitlecaseLetter
        | Cat::ModifierLetter
        | Cat::OtherLetter => Class::Letter,
        Cat::DecimalNumber | Cat::LetterNumber | Cat::OtherNumber => Class::Number,
        _ => Class::Other,
    }
}

/// GPT-2's regex over `text`: each match is a word (the regex matches everywhere, so nothing
/// falls between matches).
fn gpt2<'a>(text: &'a str, words: &mut Vec<&'a str>) {
    let chars: Vec<(usize, char, Class)> = text
        .char_indices()
        .map(|(at, c)| (at, c, class(c)))
        .collect();
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(at, _, _)| at);
    // The length of the run of characters of class `class` from `i`.
    let run = |i: usize, class: Class| chars[i..].iter().take_while(|x| x.2 == class).count();
    let mut i = 0;
    while i < chars.len() {
        let (_, c, here) = chars[i];
        let next = chars.get(i + 1).map(|x| x.2);
        let len = if let Some(n) = contraction(&text[offset(i)..]) {
            n
        } else if here == Class::Space {
            let spaces = run(i, Class::Space);
            match (c, next) {
                // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: a plain space joins what follows.
                (' ', Some(class)) if class != Class::Space => 1 + run(i + 1, class),
                // `\s+(?!\S)` leaves the last space of a run for the word after it; `\s+`
                // takes a lone space before a word, or the run at the end.
                _ if i + spaces < chars.len() && spaces > 1 => spaces - 1,
                _ => spaces,
            }
        } else {
            run(i, here)
        };
        words.push(&text[offset(i)..offset(i + len)]);
        i += len;
    }
}

/// `'s|'t|'re|'ve|'m|'ll|'d` at the start of `rest`: its length in characters.
fn contraction(rest: &str) -> Option<usize> {
    let after = rest.strip_prefix('\'')?;
    ["s", "t", "re", "ve", "m", "ll", "d"]
        .iter()
        .find(|suffix| after.starts_with(*suffix))
        .map(|suffix| 1 + suffix.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_as_gpt2s_regex() {
        assert_eq!(
            split("Hello world's  end!!  \n x 42café", false),
            ["Hello", " world", "'s", " ", " end", "!!", "  \n", " x", " 42", "café"]
        );
        assert_eq!(split("  ", false), ["  "]);
        assert_eq!(split("a\n\nb", false), ["a", "\n", "\n", "b"]);
        assert_eq!(split("'S 'll", false), ["'", "S", " '", "ll"]);
    }

    #[test]
    fn digits_apart_first() {
        assert_eq!(
            split("in 2024, ½x", true),
            ["in", " ", "2", "0", "2", "4", ",", " ", "½", "x"]
        );
    }
}
