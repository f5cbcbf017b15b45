//! Bytes in and out: safetensors files (the `safetensors` crate), every header checked, GGUF
//! files (our own reader, every count and offset checked), and tokenizers: BERT's WordPiece from a
//! tokenizer.json and byte-level BPE from a GGUF, both written here and checked id for id
//! against Hugging Face's `tokenizers` by the tests.

pub(crate) mod added_tokens;
pub mod bpe;
pub mod gguf;
pub mod labeled;
pub mod safetensors;
pub mod tokenizer;
