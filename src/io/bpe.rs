//! Byte-level BPE from a GGUF's tokenizer metadata (DESIGN.md §5: SmolLM2's tokenizer), so that a
//! Llama-family GGUF needs no tokenizer.json. Written here (`split`, `merge`) rather than taken
//! from the `tokenizers` crate, which would more than double the browser download;
//! tests/bpe_tokenizer.rs checks every id against that library.
//!
//! What the GGUF holds and how it is used, for `tokenizer.ggml.model = "gpt2"`:
//! - `tokenizer.ggml.tokens`: the vocabulary, id = index, each token written in GPT-2's byte
//!   alphabet (every byte a printable character: space is `Ġ`, newline `Ċ`);
//! - `tokenizer.ggml.merges`: the merge rules `"a b"` in priority order;
//! - `tokenizer.ggml.token_type` (optional): 3 (control) tokens such as `<|im_start|>` become
//!   special tokens, matched whole in any text; 4 (user-defined) tokens are matched whole too;
//! - `tokenizer.ggml.pre`: how text is split before BPE. `"smollm"` (and `"starcoder"`, the same
//!   rule) splits every digit off on its own, then applies GPT-2's regex: llama.cpp runs the
//!   regexes `\p{N}` then GPT-2's, and SmolLM2's own tokenizer.json has `Digits(individual_digits)`
//!   then `ByteLevel`, which is what `split` does. `"gpt-2"` is GPT-2's regex alone. Any other
//!   value is refused: the split decides the ids, and a guess would give wrong ones silently;
//! - `tokenizer.ggml.{bos,eos,unknown,padding}_token_id`, `tokenizer.ggml.add_{bos,eos}_token`;
//! - `tokenizer.chat_template`: rendered by [`BpeTokenizer::chat_prompt`] when it is ChatML
//!   (`chat` module), refused otherwise.
//!
//! Decoding maps each token back to its bytes; a byte-level token can hold part of a UTF-8
//! character (an emoji is often 2 to 4 tokens), so a generated stream is decoded through
//! [`StreamDecoder`], which holds incomplete characters back until their last byte arrives.
//!
//! ```no_run
//! # fn demo(bytes: &[u8]) -> spectune::Result<()> {
//! use spectune::io::bpe::{BpeTokenizer, StreamDecoder};
//! let file = spectune::io::gguf::read("SmolLM2 GGUF", bytes)?;
//! let tok = BpeTokenizer::from_gguf(&file)?;
//! let prompt = tok.chat_prompt(&[("user", "What is 12 + 30?")], true)?;
//! let ids = tok.encode(&prompt, false)?; // <|im_start|>system … <|im_start|>assistant\n
//! let mut stream = StreamDecoder::new();
//! for &id in &ids {
//!     print!("{}", stream.push(&tok, id)?); // whole characters only
//! }
//! print!("{}", stream.finish());
//! assert_eq!(tok.decode(&ids)?, prompt);
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use crate::io::added_tokens::{AddedTokens, Piece};
use crate::io::gguf::{GgufFile, Value};
use crate::{Error, Result};

mod chat;
mod merge;
mod split;

use merge::Merges;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_NORMAL: i64 = 1;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// A byte-level BPE tokenizer read from a GGUF file's metadata.
#[derive(Clone)]
pub struct BpeTokenizer {
    /// Token text (in GPT-2's byte alphabet) → id.
    vocab: HashMap<String, u32>,
    merges: Merges,
    /// The id of each single byte's token (boxed: 2 KiB would bloat every value holding one).
    byte_ids: Box<[Option<u32>; 256]>,
    /// Control and user-defined tokens, matched whole in the raw text.
    added: AddedTokens,
    /// Whether every numeric character is cut out on its own before GPT-2's split.
    digits_apart: bool,
    /// Each token's bytes, by id: what it contributes to decoded text.
    pieces: Vec<Box<[u8]>>,
    /// Whether each token is a control token (`<|im_end|>`), by id.
    control: Vec<bool>,
    bos: Option<u32>,
    eos: u32,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    chat_template: Option<String>,
}

impl BpeTokenizer {
    /// Builds the tokenizer from `tokenizer.*` metadata. Errors name the key at fault: a missing
    /// or mistyped key ([`Error::BadFile`] from the GGUF reader); a tokenizer model other than
    /// `gpt2`, an unknown pre-tokenizer, a duplicated token, a malformed merge, an id outside the
    /// vocabulary ([`Error::Tokenizer`]).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.model is {model:?}; only \"gpt2\" (byte-level BPE) is read here"
            )));
        }
        let digits_apart = digits_apart(file)?;
        if flag(file, "tokenizer.ggml.add_space_prefix")? {
            return Err(Error::Tokenizer(
                "tokenizer.ggml.add_space_prefix is true; only false is supported".into(),
            ));
        }

        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 || u32::try_from(n).is_err() {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.tokens holds {n} tokens"
            )));
        }
        let types = match file.get("tokenizer.ggml.token_type") {
            None => vec![TOKEN_NORMAL; n],
            Some(_) => file.get_i64_array("tokenizer.ggml.token_type")?,
        };
        if types.len() != n {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.token_type has {} entries for {n} tokens",
                types.len()
            )));
        }

        let mut vocab = HashMap::with_capacity(n);
        for (id, token) in tokens.iter().enumerate() {
            if let Some(first) = vocab.insert(token.clone(), id as u32) {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.tokens holds {token:?} twice, at ids {first} and {id}"
                )));
            }
        }
        // A pair listed twice keeps its later priority, as in the `tokenizers` library.
        let mut merges = Merges::new();
        for (rank, merge) in file
            .get_str_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
        {
            let (a, b, merged) = split_merge(&vocab, rank, merge)?;
            merges.insert((a, b), (rank as u32, merged));
        }

        let control: Vec<bool> = types.iter().map(|&t| t == TOKEN_CONTROL).collect();
        // Control tokens (special, skippable in decoding) and user-defined ones (ordinary text)
        // are both matched whole.
        let added = AddedTokens::new(
            tokens
                .iter()
                .zip(&types)
                .enumerate()
                .filter(|(_, (_, &ty))| ty == TOKEN_CONTROL || ty == TOKEN_USER_DEFINED)
                .map(|(id, (token, _))| (token.as_str(), id as u32)),
        );

        let alphabet = byte_alphabet();
        let mut byte_ids = Box::new([None; 256]);
        for (c, byte) in alphabet.iter().enumerate() {
            if let Some(byte) = byte {
                let c = char::from_u32(c as u32)
                    .map(String::from)
                    .unwrap_or_default();
                byte_ids[*byte as usize] = vocab.get(&c).copied();
            }
        }
        let pieces = tokens
            .iter()
            .zip(&control)
            .map(|(t, &is_control)| token_bytes(&alphabet, t, is_control))
            .collect();
        let id = |key: &str| -> Result<Option<u32>> {
            if file.get(key).is_none() {
                return Ok(None);
            }
            let id = file.get_u32(key)?;
            if id as usize >= n {
                return Err(Error::Tokenizer(format!(
                    "{key} is {id}, outside the vocabulary of {n} tokens"
                )));
            }
            Ok(Some(id))
        };
        let eos = id("tokenizer.ggml.eos_token_id")?.ok_or_else(|| {
            Error::Tokenizer("tokenizer.ggml.eos_token_id is missing: generation needs it".into())
        })?;
        Ok(Self {
            vocab,
            merges,
            byte_ids,
            added,
            digits_apart,
            pieces,
            control,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            add_bos: flag(file, "tokenizer.ggml.add_bos_token")?,
            add_eos: flag(file, "tokenizer.ggml.add_eos_token")?,
            chat_template: match file.get("tokenizer.chat_template") {
                None => None,
                Some(_) => Some(file.get_str("tokenizer.chat_template")?.to_owned()),
            },
        })
    }

    /// Text to ids. Control tokens written in the text (`<|im_start|>`) are recognised as
    /// single tokens, so a chat prompt from [`BpeTokenizer::chat_prompt`] encodes as the model
    /// was trained; text from an untrusted user can therefore inject them too.
    ///
    /// `add_special` adds what the file asks for: BOS in front when
    /// `tokenizer.ggml.add_bos_token` is true, EOS at the end when `add_eos_token` is (both
    /// absent or false for SmolLM2, as in its own tokenizer.json: nothing is added).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            if let Some(bos) = self.bos {
                ids.push(bos);
            }
        }
        for piece in self.added.split(text) {
            match piece {
                Piece::Token(id) => ids.push(id),
                Piece::Text(text) => {
                    for word in split::split(text, self.digits_apart) {
                        self.push_word(word, &mut ids);
                    }
                }
            }
        }
        if add_special && self.add_eos {
            ids.push(self.eos);
        }
        Ok(ids)
    }

    /// Ids to text, control tokens written out (`<|im_end|>`), so `decode(encode(x)) == x`.
    /// Bytes that do not form UTF-8 (a sequence cut inside a character) become U+FFFD. An id
    /// outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&id| &*self.pieces[id as usize])
            .copied()
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Like [`BpeTokenizer::decode`], without the control tokens.
    pub fn decode_skipping_control(&self, ids: &[u32]) -> Result<String> {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| !self.is_control(id))
            .collect();
        self.decode(&kept)
    }

    /// The bytes token `id` stands for: one or more bytes of UTF-8 text, possibly part of a
    /// character; a control token's own text.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.pieces
            .get(id as usize)
            .map(|p| &p[..])
            .ok_or_else(|| self.out_of_range(id))
    }

    /// Whether `id` is a control token (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`…).
    pub fn is_control(&self, id: u32) -> bool {
        self.control.get(id as usize).copied().unwrap_or(false)
    }

    /// The id of a token written in the vocabulary's form (`"<|im_end|>"`, `"Ġthe"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// The end-of-sequence id; generation stops there (`<|im_end|>`, 2, for SmolLM2-Instruct).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// The beginning-of-sequence id, if the file names one (`<|im_start|>`, 1, for SmolLM2).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The unknown-token id, if the file names one (never produced: every byte has a token).
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// The padding id, if the file names one.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Number of tokens (49152 for SmolLM2).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// The file's `tokenizer.chat_template`, verbatim.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Renders `messages` (role, content) with the file's chat template, as Hugging Face's
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=…)` would. Only
    /// ChatML templates are recognised (SmolLM2's adds a default system message when the first
    /// message is not one); any other template is refused with an error quoting its start.
    pub fn chat_prompt<R: AsRef<str>, C: AsRef<str>>(
        &self,
        messages: &[(R, C)],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::Tokenizer("the file has no tokenizer.chat_template".into()))?;
        Ok(chat::ChatTemplate::recognise(template)?.render(messages, add_generation_prompt))
    }

    /// Appends the ids of one word from the split: its bytes, merged. A byte the vocabulary
    /// has no token for (SmolLM2 has none for 0xf1, which starts U+40000..U+7FFFF) is dropped,
    /// as Hugging Face's `tokenizers` drops it when the model names no unknown token.
    fn push_word(&self, word: &str, ids: &mut Vec<u32>) {
        let mut word_ids: Vec<u32> = word
            .bytes()
            .filter_map(|byte| self.byte_ids[byte as usize])
            .collect();
        merge::merge(&self.merges, &mut word_ids);
        ids.append(&mut word_ids);
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.pieces.len()) {
            Some(&id) => Err(self.out_of_range(id)),
            None => Ok(()),
        }
    }

    fn out_of_range(&self, id: u32) -> Error {
        Error::Tokenizer(format!(
            "token id {id} is outside the vocabulary of {} tokens",
            self.pieces.len()
        ))
    }
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BpeTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// Decodes ids one at a time, as a model generates them, into whole UTF-8 characters: bytes of
/// a character split across tokens are held until it is complete. Concatenating every `push`
/// and the `finish` gives exactly [`BpeTokenizer::decode`] of all the ids.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    /// Bytes received but not yet returned: at most the start of one character.
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds token `id`; returns the text it completes (often empty inside a multi-byte
    /// character). Bytes that can never be UTF-8 come out as U+FFFD, as in `decode`.
    pub fn push(&mut self, tokenizer: &BpeTokenizer, id: u32) -> Result<String> {
        self.pending.extend_from_slice(tokenizer.token_bytes(id)?);
        let mut out = String::new();
        let mut rest = &self.pending[..];
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    out.push_str(text);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // Checked valid by from_utf8 just above.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for its next bytes.
                        None => {
                            rest = after;
                            break;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[bad..];
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        Ok(out)
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: an unfinished character left over becomes U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

/// How text is split before BPE, named by `tokenizer.ggml.pre` (llama.cpp's names): whether
/// numeric characters are cut out first (`"smollm"`, `"starcoder"`) or not (`"gpt-2"`).
fn digits_apart(file: &GgufFile) -> Result<bool> {
    let Some(value) = file.get("tokenizer.ggml.pre") else {
        return Err(Error::Tokenizer(
            "tokenizer.ggml.pre is missing: without it the text split, and so the ids, cannot \
             be known"
                .into(),
        ));
    };
    match value.as_str() {
        Some("smollm" | "starcoder") => Ok(true),
        Some("gpt-2") => Ok(false),
        Some(other) => Err(Error::Tokenizer(format!(
            "tokenizer.ggml.pre is {other:?}; the pre-tokenizers read here are \"smollm\", \
             \"starcoder\" and \"gpt-2\""
        ))),
        None => Err(Error::Tokenizer(format!(
            "tokenizer.ggml.pre is a {}, not a string",
            value.value_type().name()
        ))),
    }
}

/// A bool key that may be absent (false).
fn flag(file: &GgufFile, key: &str) -> Result<bool> {
    match file.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => file.get_bool(key),
    }
}

/// `"a b"` into the ids of `a`, `b` and `ab`, each of which must be in the vocabulary.
/// Byte-level tokens never hold a space (space is `Ġ`), so exactly one space separates the two.
fn split_merge(vocab: &HashMap<String, u32>, i: usize, merge: &str) -> Result<(u32, u32, u32)> {
    let bad = |why: &str| {
        Error::Tokenizer(format!(
            "tokenizer.ggml.merges[{i}] is {:?}: {why}",
            excerpt(merge)
        ))
    };
    let (a, b) = merge
        .split_once(' ')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '))
        .ok_or_else(|| bad("not two tokens separated by one space"))?;
    let joined = format!("{a}{b}");
    let id = |part: &str| {
        vocab
            .get(part)
            .copied()
            .ok_or_else(|| bad(&format!("{part:?} is not in tokenizer.ggml.tokens")))
    };
    Ok((id(a)?, id(b)?, id(&joined)?))
}

/// GPT-2's byte alphabet inverted, indexed by character: printable bytes (`!`..`~`, `¡`..`¬`,
/// `®`..`ÿ`) stand for themselves; the other 68 (controls, space, DEL, NBSP, soft hyphen) are
/// given U+0100.. in byte order (so space is U+0120 `Ġ`, newline U+010A `Ċ`).
fn byte_alphabet() -> [Option<u8>; 0x144] {
    let mut table = [None; 0x144];
    let mut shifted = 0x100;
    for b in 0..=255u8 {
        if matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff) {
            table[b as usize] = Some(b);
        } else {
            table[shifted] = Some(b);
            shifted += 1;
        }
    }
    table
}

/// A token's bytes: its characters through GPT-2's byte alphabet; a control token, or one with
/// a character outside the alphabet, as its own UTF-8 (what the `tokenizers` ByteLevel decoder
/// does too).
fn token_bytes(alphabet: &[Option<u8>], token: &str, is_control: bool) -> Box<[u8]> {
    if !is_control {
        let bytes: Option<Vec<u8>> = token
            .chars()
            .map(|c| alphabet.get(c as usize).copied().flatten())
            .collect();
        if let Some(bytes) = bytes {
            return bytes.into();
        }
    }
    token.as_bytes().into()
}

/// The first 60 characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let table = byte_alphabet();
        let mut seen = [false; 256];
        for b in table.iter().flatten() {
            assert!(!seen[*b as usize], "byte {b} twice");
            seen[*b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "every byte has a character");
        let byte = |c: char| table.get(c as usize).copied().flatten();
        assert_eq!(
            [byte('Ġ'), byte('Ċ'), byte('a'), byte('ÿ'), byte('東')],
            [Some(b' '), Some(b'\n'), Some(b'a'), Some(0xff), None]
        );
        assert_eq!(&*token_bytes(&table, "ĠthereĊ", false), b" there\n");
        assert_eq!(&*token_bytes(&table, "<|im_end|>", true), b"<|im_end|>");
    }
}
