//! Text to token ids, from a Hugging Face tokenizer.json (the `tokenizers` crate), for batches of
//! sentences fed to the BERT encoder (DESIGN.md §5: MiniLM's WordPiece).
//!
//! MiniLM's tokenizer.json pads and truncates every text to 128 tokens. Both are turned off at
//! load: a batch is padded here to its longest text, or truncated and padded to a length the
//! caller gives, so that short batches cost short sequences.

use tokenizers::{Encoding, PostProcessor, TruncationDirection};

use crate::{Error, Result};

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
    inner: tokenizers::Tokenizer,
    pad_id: u32,
    pad_type_id: u32,
    /// Special tokens the post-processor adds around one text (`[CLS]` and `[SEP]` for BERT: 2).
    n_special: usize,
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
    /// Reads a tokenizer.json, turning its padding and truncation off. The pad id is the file's
    /// padding id, else the id of `[PAD]`; a file with neither is refused.
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| Error::Tokenizer(format!("cannot read tokenizer.json: {e}")))?;
        let (pad_id, pad_type_id) = match inner.get_padding() {
            Some(p) => (p.pad_id, p.pad_type_id),
            None => match inner.token_to_id("[PAD]") {
                Some(id) => (id, 0),
                None => {
                    return Err(Error::Tokenizer(
                        "tokenizer.json has no padding settings and no [PAD] token".into(),
                    ))
                }
            },
        };
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(format!("cannot turn truncation off: {e}")))?;
        let n_special = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        Ok(Self {
            inner,
            pad_id,
            pad_type_id,
            n_special,
        })
    }

    /// The id padding uses (0 for MiniLM).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of ids, added tokens included (30522 for MiniLM).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
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
            return Err(Error::Tokenizer(
                "no texts to encode: the batch is empty".into(),
            ));
        }
        if let Some(n) = max_len {
            if n <= self.n_special {
                return Err(Error::Tokenizer(format!(
                    "max length {n} leaves no room for text beside the {} special tokens",
                    self.n_special
                )));
            }
        }
        let rows = texts
            .iter()
            .enumerate()
            .map(|(index, text)| self.encode_one(index, text.as_ref(), max_len))
            .collect::<Result<Vec<_>>>()?;
        let longest = rows.iter().map(Encoding::len).max().unwrap_or(0);
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
            let len = row.len();
            if len > seq {
                // Only a post-processor that adds more tokens than it declares gets here.
                return Err(Error::Tokenizer(format!(
                    "text {b} has {len} tokens after truncation to {seq}"
                )));
            }
            let at = b * seq..b * seq + len;
            out.ids[at.clone()].copy_from_slice(row.get_ids());
            out.attention_mask[at.clone()].copy_from_slice(row.get_attention_mask());
            out.token_type_ids[at].copy_from_slice(row.get_type_ids());
        }
        Ok(out)
    }

    /// One text: tokens first, then truncation, then the special tokens — the order the
    /// tokenizers crate itself uses (`TokenizerImpl::post_process`), so truncation never drops
    /// `[SEP]`.
    fn encode_one(&self, index: usize, text: &str, max_len: Option<usize>) -> Result<Encoding> {
        let mut encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode text {index}: {e}")))?;
        if encoding.is_empty() {
            return Err(Error::EmptyText { index });
        }
        if let Some(n) = max_len {
            // n > n_special was checked; stride 0 < n - n_special as `truncate` requires.
            encoding.truncate(n - self.n_special, 0, TruncationDirection::Right);
            // The cut-off tail is kept as "overflowing" encodings; we have no use for it.
            drop(encoding.take_overflowing());
        }
        self.inner.post_process(encoding, None, true).map_err(|e| {
            Error::Tokenizer(format!("cannot add special tokens to text {index}: {e}"))
        })
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .field("n_special", &self.n_special)
            .finish()
    }
}
