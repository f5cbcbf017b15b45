//! Bytes in and out: safetensors files (the `safetensors` crate), every header checked.

pub mod safetensors;
