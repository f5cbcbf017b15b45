//! One error type for the crate. Every failure a user can cause is a value of it, never a panic;
//! at the wasm boundary it becomes a JS `Error` carrying the same message.

/// Anything that can go wrong in spectune.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The browser has no `navigator.gpu`.
    #[error("WebGPU is not available here (navigator.gpu is missing): use a browser with WebGPU enabled, such as a recent Chrome or Edge, or Firefox/Safari with WebGPU turned on")]
    NoWebGpu,

    /// No adapter was found (no GPU, no driver, or WebGPU blocked).
    #[error("no GPU adapter was found: {0}")]
    NoAdapter(String),

    /// The adapter refused to create a device with the limits we asked for.
    #[error("the GPU adapter refused to create a device: {0}")]
    DeviceRefused(String),

    /// The device was lost (driver reset, tab in the background too long, device destroyed).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),

    /// The GPU reported an error (other than out of memory) while running our commands.
    #[error("the GPU reported an error: {0}")]
    Gpu(String),

    /// The GPU (for a software adapter such as lavapipe, the host) could not allocate memory.
    /// Nothing was retried; what was allocated before is intact and the device still works.
    #[error(
        "the GPU is out of memory: {what} could not be allocated{}. Free GPU memory (drop models and tensors no longer needed, Gpu::clear_pool) or use a smaller batch or model",
        .bytes.map(|b| format!(" ({b} bytes)")).unwrap_or_default()
    )]
    OutOfMemory {
        /// The buffer that failed (a tensor's shape, or wgpu's call and label).
        what: String,
        /// Its size, where known.
        bytes: Option<u64>,
    },

    /// Two operands do not fit together.
    #[error("shape mismatch in {op}: {detail}")]
    ShapeMismatch { op: &'static str, detail: String },

    /// Host data of the wrong length for the shape it should fill.
    #[error("{what}: {len} values do not fill shape {shape:?} ({expected} values)")]
    DataLength {
        what: &'static str,
        len: usize,
        shape: Vec<usize>,
        expected: usize,
    },

    /// A tensor needs a buffer larger than the device allows.
    #[error(
        "{what} needs a buffer of {bytes} bytes, over this GPU's {limit_name} of {limit} bytes"
    )]
    BufferTooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        limit_name: &'static str,
    },

    /// A dispatch would need more workgroups than the device allows in one dimension.
    #[error("{op} needs {count} workgroups in one dimension, over this GPU's limit of {max}")]
    TooManyWorkgroups {
        op: &'static str,
        count: u64,
        max: u32,
    },

    /// A rank outside 1..=min(m, n).
    #[error("rank {rank} is not possible for a {m}×{n} matrix: it must be between 1 and {max}")]
    InvalidRank {
        rank: usize,
        m: usize,
        n: usize,
        max: usize,
    },

    /// A matrix with no rows or no columns where one is needed.
    #[error("{what} is empty (shape {shape:?})")]
    EmptyMatrix { what: String, shape: Vec<usize> },

    /// NaN or Inf where finite values are needed.
    #[error("{0}")]
    NonFinite(String),

    /// A numerical method failed to converge.
    #[error("{0}")]
    Numerical(String),

    /// An adapter that cannot be built as asked (kind, rank, band, targets).
    #[error("invalid adapter: {0}")]
    InvalidAdapter(String),

    /// An adapter (file) that does not belong to this base model: another weight, shape or target.
    #[error("the adapter does not fit this model: {0}")]
    AdapterMismatch(String),

    /// A file written in a format version this build does not read.
    #[error(
        "{what} has format version {found}, but this build of spectune reads version {supported}"
    )]
    UnsupportedVersion {
        what: &'static str,
        found: String,
        supported: u32,
    },

    /// A tensor a model or file needs is not in the file.
    #[error("{what} has no tensor named {name}")]
    MissingTensor { what: &'static str, name: String },

    /// An integer input (a token id, a label) outside the range its table or classes allow.
    #[error("{what}[{position}] is {value}, out of range: it must be less than {limit}")]
    IndexOutOfRange {
        what: &'static str,
        position: usize,
        value: u32,
        limit: usize,
    },

    /// A malformed file.
    #[error("malformed {what}: {detail}")]
    BadFile { what: &'static str, detail: String },

    /// A tokenizer.json that cannot be read, or a text the tokenizer cannot encode as asked.
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// A text in a batch that gives no tokens (empty, or only whitespace).
    #[error("text {index} of the batch is empty: every text needs at least one token")]
    EmptyText { index: usize },

    /// Reading a buffer back to the host failed.
    #[error("reading a result back from the GPU failed: {0}")]
    Readback(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
