//! Models over the kernels: forward and backward of whole networks, weight names as in HF
//! checkpoints (DESIGN.md §2). [`layers`] holds the BERT encoder's kernels other than matmul.

pub mod bert;
pub mod classifier;
pub mod layers;
pub mod linear;
pub mod mlp;
