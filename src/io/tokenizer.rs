//! Text to token ids, from a Hugging Face tokenizer.json, for batches of sentences fed to the
//! BERT encoder (DESIGN.md §5: MiniLM's WordPiece). Written here rather than taken from the
//! `tokenizers` crate, which would more than double the browser download; tests/tokenizer.rs
//! checks every id against that library.
//!
//! What is read: the `BertNormalizer` (`bert_text`), the `BertPreTokenizer`, the `WordPiece`
//! model (`wordpiece`), the added tokens (`[CLS]` written in a text is that token), a
//! `TemplateProcessing` or `BertProcessing` post-processor and the padding id. Any other
//! component is refused by name, since a guess would give wrong ids silently.
//!
//! MiniLM's tokenizer.json pads and truncates every text to 128 tokens. Both are ignored: a
//! batch is padded here to its longest text, or truncated and padded to a length the caller
//! gives, so that short batches cost short sequences.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::io::added_tokens::{AddedTokens, Piece};
use crate::{Error, Result};

mod bert_text;
mod wordpiece;

use bert_text::BertNormalizer;
use wordpiece::WordPiece;

/// A tokenizer read from a tokenizer.json.
///
/// ```no_run
/// # fn main() -> spectune::Result<()> {
/// use spectune::io::tokenizer::Tokenizer;
/// let json = std::fs::read("tokenizer.json").map_err(|e| spectune::Error::Tokenizer(e.to_string()))?;
/// let tokenizer = Tokenizer::from_bytes(&json)?;
/// let batch = tokenizer.encode_batch(&["Wow... Loved this place.", "Crust is not good."], None)?;
/// assert_eq!(batch.ids.len(), batch.batch * batch.seq); // [CLS] … [SEP] [PAD]…, row-major
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    normalizer: Option<BertNormalizer>,
    /// Whether words are split as `BertPreTokenizer` does; without it the text is one word.
    split_words: bool,
    model: WordPiece,
    added: AddedTokens,
    /// What the post-processor puts around one text: (id, type id) before and after it, and
    /// the type id of the text's own tokens.
    before: Vec<(u32, u32)>,
    after: Vec<(u32, u32)>,
    text_type_id: u32,
    pad_id: u32,
    pad_type_id: u32,
    vocab_size: usize,
}

/// A batch of encoded texts, each row `seq` long: shape (batch, seq), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, (batch, seq); rows shorter than `seq` end in the pad id.
    pub ids: Vec<u32>,
    /// 1 for a real token (special tokens included), 0 for padding, (batch, seq).
    pub attention_mask: Vec<u32>,
    /// Segment ids, (batch, seq): 0 for a single text, and the file's pad type id on padding.
    pub token_type_ids: Vec<u32>,
    /// Number of texts.
    pub batch: usize,
    /// Length of every row.
    pub seq: usize,
}

impl Tokenizer {
    /// Reads a tokenizer.json. The pad id is the file's padding id, else the id of `[PAD]`; a
    /// file with neither is refused, and so is any component other than those listed in the
    /// module's documentation, with its name.
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let root: Value = serde_json::from_slice(json)
            .map_err(|e| bad(format!("cannot read tokenizer.json: {e}")))?;
        let root = object(&root, "tokenizer.json")?;

        let model = object(field(root, "", "model")?, "model")?;
        let kind = string(field(model, "model", "type")?, "model.type")?;
        if kind != "WordPiece" {
            return Err(bad(format!(
                "model.type is {kind:?}; only \"WordPiece\" is read here"
            )));
        }
        let mut vocab = HashMap::new();
        for (token, id) in object(field(model, "model", "vocab")?, "model.vocab")? {
            vocab.insert(
                token.clone(),
                id_of(id, &format!("model.vocab[{token:?}]"))?,
            );
        }
        let unk_token = string(field(model, "model", "unk_token")?, "model.unk_token")?;
        let unk = *vocab.get(unk_token).ok_or_else(|| {
            bad(format!(
                "model.unk_token {unk_token:?} is not in model.vocab"
            ))
        })?;
        let model = WordPiece {
            unk,
            prefix: string(
                field(model, "model", "continuing_subword_prefix")?,
                "model.continuing_subword_prefix",
            )?
            .to_owned(),
            max_chars: count(
                field(model, "model", "max_input_chars_per_word")?,
                "model.max_input_chars_per_word",
            )?,
            vocab,
        };

        let added_list = match root.get("added_tokens") {
            None | Some(Value::Null) => Vec::new(),
            Some(list) => added_tokens(list)?,
        };
        let vocab_size = model.vocab.len()
            + added_list
                .iter()
                .filter(|(content, _)| !model.vocab.contains_key(content))
                .count();
        let lookup = |token: &str| -> Option<u32> {
            added_list
                .iter()
                .find(|(content, _)| content == token)
                .map(|&(_, id)| id)
                .or_else(|| model.vocab.get(token).copied())
        };

        let (pad_id, pad_type_id) = match root.get("padding") {
            Some(Value::Object(padding)) => (
                id_of(field(padding, "padding", "pad_id")?, "padding.pad_id")?,
                id_of(
                    field(padding, "padding", "pad_type_id")?,
                    "padding.pad_type_id",
                )?,
            ),
            _ => match lookup("[PAD]") {
                Some(id) => (id, 0),
                None => {
                    return Err(bad(
                        "tokenizer.json has no padding settings and no [PAD] token".into(),
                    ))
                }
            },
        };
        let (before, after, text_type_id) = post_processor(root.get("post_processor"))?;
        Ok(Self {
            normalizer: normalizer(root.get("normalizer"))?,
            split_words: split_words(root.get("pre_tokenizer"))?,
            added: AddedTokens::new(added_list.iter().map(|(c, id)| (c.as_str(), *id))),
            model,
            before,
            after,
            text_type_id,
            pad_id,
            pad_type_id,
            vocab_size,
        })
    }

    /// The id padding uses (0 for MiniLM).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of ids, added tokens included (30522 for MiniLM).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Special tokens the post-processor adds around one text (`[CLS]` and `[SEP]` for BERT: 2).
    fn n_special(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// Encodes a batch of texts, each with its special tokens (`[CLS] text [SEP]` for BERT).
    ///
    /// `max_len: None` pads every row to the longest text and truncates nothing.
    /// `max_len: Some(n)` cuts texts longer than n tokens (the text is cut, the special tokens
    /// are kept, so a row still ends in `[SEP]`) and pads every row to exactly n.
    ///
    /// Errors: an empty batch; `n` too small to hold the special tokens and one token of text;
    /// a text that gives no tokens ([`Error::EmptyText`] with its index).
    pub fn encode_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        max_len: Option<usize>,
    ) -> Result<Encoded> {
        if texts.is_empty() {
            return Err(bad("no texts to encode: the batch is empty".into()));
        }
        let n_special = self.n_special();
        if let Some(n) = max_len {
            if n <= n_special {
                return Err(bad(format!(
                    "max length {n} leaves no room for text beside the {n_special} special tokens"
                )));
            }
        }
        let mut rows = Vec::with_capacity(texts.len());
        for (index, text) in texts.iter().enumerate() {
            let mut ids = self.encode_text(text.as_ref());
            if ids.is_empty() {
                return Err(Error::EmptyText { index });
            }
            if let Some(n) = max_len {
                ids.truncate(n - n_special);
            }
            rows.push(ids);
        }
        let longest = rows.iter().map(Vec::len).max().unwrap_or(0) + n_special;
        let seq = max_len.unwrap_or(longest);
        let batch = rows.len();
        let mut out = Encoded {
            ids: vec![self.pad_id; batch * seq],
            attention_mask: vec![0; batch * seq],
            token_type_ids: vec![self.pad_type_id; batch * seq],
            batch,
            seq,
        };
        for (b, row) in rows.iter().enumerate() {
            let tokens = self
                .before
                .iter()
                .copied()
                .chain(row.iter().map(|&id| (id, self.text_type_id)))
                .chain(self.after.iter().copied());
            for (t, (id, type_id)) in tokens.enumerate() {
                out.ids[b * seq + t] = id;
                out.attention_mask[b * seq + t] = 1;
                out.token_type_ids[b * seq + t] = type_id;
            }
        }
        Ok(out)
    }

    /// One text's ids, without special tokens: added tokens are cut out first, and the text
    /// between them is normalised, split into words and looked up.
    fn encode_text(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for piece in self.added.split(text) {
            let text = match piece {
                Piece::Token(id) => {
                    ids.push(id);
                    continue;
                }
                Piece::Text(text) => text,
            };
            let normalized = match &self.normalizer {
                Some(normalizer) => normalizer.normalize(text),
                None => text.to_owned(),
            };
            if self.split_words {
                for word in bert_text::split_words(&normalized) {
                    self.model.push_ids(word, &mut ids);
                }
            } else if !normalized.is_empty() {
                self.model.push_ids(&normalized, &mut ids);
            }
        }
        ids
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("pad_id", &self.pad_id)
            .field("n_special", &self.n_special())
            .finish()
    }
}

fn bad(message: String) -> Error {
    Error::Tokenizer(message)
}

fn object<'a>(value: &'a Value, name: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| bad(format!("{name} in tokenizer.json is not an object")))
}

fn field<'a>(map: &'a Map<String, Value>, parent: &str, key: &str) -> Result<&'a Value> {
    map.get(key).ok_or_else(|| {
        let path = if parent.is_empty() {
            key.to_owned()
        } else {
            format!("{parent}.{key}")
        };
        bad(format!("tokenizer.json has no {path}"))
    })
}

fn string<'a>(value: &'a Value, name: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| bad(format!("{name} in tokenizer.json is not a string")))
}

fn count(value: &Value, name: &str) -> Result<usize> {
    value
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| bad(format!("{name} in tokenizer.json is not a count: {value}")))
}

fn id_of(value: &Value, name: &str) -> Result<u32> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            bad(format!(
                "{name} in tokenizer.json is not a token id: {value}"
            ))
        })
}

fn flag(map: &Map<String, Value>, parent: &str, key: &str) -> Result<bool> {
    field(map, parent, key)?.as_bool().ok_or_else(|| {
        bad(format!(
            "{parent}.{key} in tokenizer.json is not true or false"
        ))
    })
}

/// `added_tokens`: (content, id) of each. Tokens that must be normalised before matching are
/// refused: BERT's are all matched on the raw text.
fn added_tokens(list: &Value) -> Result<Vec<(String, u32)>> {
    let list = list
        .as_array()
        .ok_or_else(|| bad("added_tokens in tokenizer.json is not a list".into()))?;
    list.iter()
        .enumerate()
        .map(|(i, token)| {
            let name = format!("added_tokens[{i}]");
            let token = object(token, &name)?;
            let content = string(field(token, &name, "content")?, &format!("{name}.content"))?;
            for option in ["normalized", "single_word", "lstrip", "rstrip"] {
                if token.get(option).and_then(Value::as_bool) == Some(true) {
                    return Err(bad(format!(
                        "{name} ({content:?}) sets {option}; only tokens matched as written are read"
                    )));
                }
            }
            Ok((content.to_owned(), id_of(field(token, &name, "id")?, &format!("{name}.id"))?))
        })
        .collect()
}

fn normalizer(value: Option<&Value>) -> Result<Option<BertNormalizer>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let map = object(value, "normalizer")?;
    let kind = string(field(map, "normalizer", "type")?, "normalizer.type")?;
    if kind != "BertNormalizer" {
        return Err(bad(format!(
            "normalizer.type is {kind:?}; only \"BertNormalizer\" is read here"
        )));
    }
    let lowercase = flag(map, "normalizer", "lowercase")?;
    Ok(Some(BertNormalizer {
        clean_text: flag(map, "normalizer", "clean_text")?,
        handle_chinese_chars: flag(map, "normalizer", "handle_chinese_chars")?,
        // null means "as lowercase", the library's rule.
        strip_accents: match map.get("strip_accents") {
            None | Some(Value::Null) => lowercase,
            Some(_) => flag(map, "normalizer", "strip_accents")?,
        },
        lowercase,
    }))
}

fn split_words(value: Option<&Value>) -> Result<bool> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(false);
    };
    let kind = string(
        field(object(value, "pre_tokenizer")?, "pre_tokenizer", "type")?,
        "pre_tokenizer.type",
    )?;
    match kind {
        "BertPreTokenizer" => Ok(true),
        _ => Err(bad(format!(
            "pre_tokenizer.type is {kind:?}; only \"BertPreTokenizer\" is read here"
        ))),
    }
}

/// What goes around one text: (id, type id) before it, after it, and the text's type id.
type Template = (Vec<(u32, u32)>, Vec<(u32, u32)>, u32);

fn post_processor(value: Option<&Value>) -> Result<Template> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok((Vec::new(), Vec::new(), 0));
    };
    let map = object(value, "post_processor")?;
    match string(field(map, "post_processor", "type")?, "post_processor.type")? {
        "BertProcessing" => {
            let pair = |key: &str| -> Result<u32> {
                let name = format!("post_processor.{key}");
                match field(map, "post_processor", key)?
                    .as_array()
                    .map(Vec::as_slice)
                {
                    Some([_, id]) => id_of(id, &name),
                    _ => Err(bad(format!("{name} in tokenizer.json is not [token, id]"))),
                }
            };
            Ok((vec![(pair("cls")?, 0)], vec![(pair("sep")?, 0)], 0))
        }
        "TemplateProcessing" => template(map),
        other => Err(bad(format!(
            "post_processor.type is {other:?}; \"TemplateProcessing\" and \"BertProcessing\" \
             are read here"
        ))),
    }
}

/// A `TemplateProcessing`'s `single` template: special tokens around the one `Sequence`.
fn template(map: &Map<String, Value>) -> Result<Template> {
    let items = field(map, "post_processor", "single")?
        .as_array()
        .ok_or_else(|| bad("post_processor.single in tokenizer.json is not a list".into()))?;
    let specials = object(
        field(map, "post_processor", "special_tokens")?,
        "post_processor.special_tokens",
    )?;
    let (mut before, mut after, mut text_type_id) = (Vec::new(), Vec::new(), None);
    for (i, item) in items.iter().enumerate() {
        let name = format!("post_processor.single[{i}]");
        let item = object(item, &name)?;
        let type_of = |inner: &Map<String, Value>| -> Result<u32> {
            id_of(field(inner, &name, "type_id")?, &format!("{name}.type_id"))
        };
        if let Some(sequence) = item.get("Sequence") {
            if text_type_id.is_some() {
                return Err(bad(format!(
                    "{name} is a second text in a single-text template"
                )));
            }
            text_type_id = Some(type_of(object(sequence, &name)?)?);
        } else if let Some(special) = item.get("SpecialToken") {
            let special = object(special, &name)?;
            let token = string(field(special, &name, "id")?, &format!("{name}.id"))?;
            let type_id = type_of(special)?;
            let ids = specials
                .get(token)
                .and_then(|s| s.get("ids"))
                .and_then(Value::as_array)
                .ok_or_else(|| {
                    bad(format!(
                        "{name} names {token:?}, which post_processor.special_tokens lacks"
                    ))
                })?;
            let side = if text_type_id.is_some() {
                &mut after
            } else {
                &mut before
            };
            for id in ids {
                side.push((id_of(id, &format!("special token {token:?}"))?, type_id));
            }
        } else {
            return Err(bad(format!(
                "{name} is neither a Sequence nor a SpecialToken"
            )));
        }
    }
    let text_type_id = text_type_id
        .ok_or_else(|| bad("post_processor.single has no Sequence for the text".into()))?;
    Ok((before, after, text_type_id))
}
