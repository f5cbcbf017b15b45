//! Models over the kernels: forward and backward of whole networks, weight names as in HF
//! checkpoints (DESIGN.md §2): an MLP, the BERT encoder and its classifier, and the Llama decoder
//! ([`llama`], from GGUF). [`layers`] holds their kernels other than matmul.

pub mod bert;
pub mod classifier;
pub mod layers;
pub mod linear;
pub mod llama;
pub mod mlp;
