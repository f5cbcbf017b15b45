//! Bytes in and out: safetensors files (the `safetensors` crate), every header checked, and
//! tokenizer.json files (the `tokenizers` crate).

pub mod labeled;
pub mod safetensors;
pub mod tokenizer;
