//! Bytes in and out: safetensors files (the `safetensors` crate), every header checked, GGUF
//! files (our own reader, every count and offset checked), and tokenizer.json files (the
//! `tokenizers` crate).

pub mod bpe;
pub mod gguf;
pub mod labeled;
pub mod safetensors;
pub mod tokenizer;
