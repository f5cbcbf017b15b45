//! GGUF files (version 3, and version 2, whose layout is the same), read on the host without
//! copying the tensor data: the header, every metadata key/value and every tensor info, with each
//! count, length, offset and size checked against the bytes actually there before it is used, so
//! a bad or hostile file is a named error, never a panic or an allocation of the size it claims.
//! F32, F16, Q8_0 and Q4_1 tensors dequantize to f32 (SmolLM2, DESIGN.md §5).
//!
//! Layout, all little-endian: `"GGUF"`, version u32, tensor count u64, key/value count u64; the
//! key/values (key: string, value type u32, value); the tensor infos (name: string, n_dims u32,
//! ne[0..n_dims] u64 with ne[0] the fastest-varying, ggml type u32, offset u64 from the start of
//! the data section); zero padding to `general.alignment` (default 32); the data section. A string
//! is a u64 byte length and UTF-8; an array is an item type u32, a u64 count and the items
//! (arrays may hold arrays).
//!
//! Tensor types: every ggml type whose block layout is known ([`GgmlType::block_layout`]) is
//! listed, bounds-checked and readable as raw bytes; an unknown type id is an error when the file
//! is read, because its data could not be checked. Dequantizing any type but the four above is an
//! error when asked for.
//!
//! ```no_run
//! # fn demo(bytes: &[u8]) -> spectune::Result<()> {
//! let file = spectune::io::gguf::read("SmolLM2 GGUF", bytes)?;
//! let layers = file.get_u32("llama.block_count")?;
//! let tokens: &[String] = file.get_str_array("tokenizer.ggml.tokens")?;
//! // Stored with ne = [576, 49152]: 49 152 rows of 576, the vocabulary by the width.
//! assert_eq!(file.tensor("token_embd.weight")?.shape(), [49152, 576]);
//! let embedding: Vec<f32> = file.dequantize("token_embd.weight")?; // row-major (49152, 576)
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};

mod metadata;
pub use metadata::{Array, Value, ValueType};

/// The version this reader is written for; version 2 is read too (the same layout).
pub const VERSION: u32 = 3;
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Fewest bytes a tensor info takes: name length u64, n_dims u32, type u32, offset u64.
const MIN_TENSOR_INFO: u64 = 24;
/// Fewest bytes a key/value takes: key length u64, value type u32, a one-byte value.
const MIN_KEY_VALUE: u64 = 13;

/// A ggml tensor type, by its id in the file. The four spectune dequantizes are constants; any
/// other id can be named and sized through [`GgmlType::name`] and [`GgmlType::block_layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    /// Blocks of 32: f16 d, f16 m, 16 bytes of nibbles; value = d·q + m.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// Blocks of 32: f16 d, 32 i8; value = d·q.
    pub const Q8_0: GgmlType = GgmlType(8);

    /// ggml's name and (elements, bytes) per block for every type id ggml defines (ids 4 and 5,
    /// 31–33 and 36–38 were removed from ggml and are unknown here).
    fn known(self) -> Option<(&'static str, u64, u64)> {
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 40),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            40 => ("NVFP4", 64, 36),
            41 => ("Q1_0", 128, 18),
            _ => return None,
        })
    }

    /// ggml's name for this type (`"Q4_1"`), if the id is known.
    pub fn name(self) -> Option<&'static str> {
        self.known().map(|(name, _, _)| name)
    }

    /// (elements, bytes) per block, if the id is known: (32, 20) for Q4_1, (1, 4) for F32.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        self.known().map(|(_, elements, bytes)| (elements, bytes))
    }

    /// Whether [`GgufFile::dequantize`] reads this type.
    pub fn is_dequantizable(self) -> bool {
        matches!(
            self,
            GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 | GgmlType::Q4_1
        )
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (ggml type {})", self.0),
            None => write!(f, "unknown ggml type {}", self.0),
        }
    }
}

/// One tensor's description; its data is in the file's bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// As stored: unique in the file.
    pub name: String,
    /// Extents in GGUF order: `dims[0]` = ne[0] is the fastest-varying (a matrix's row length).
    /// [`TensorInfo::shape`] gives them in row-major order.
    pub dims: Vec<u64>,
    /// How the data is stored: F32, F16, Q8_0, Q4_1, or another type known by its size.
    pub ggml_type: GgmlType,
    /// Byte offset from the start of the data section, a multiple of the alignment.
    pub offset: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The number of values (1 for a tensor with no dimensions).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape in row-major terms, slowest-varying first: `dims` reversed, so a matrix stored
    /// with ne = [cols, rows] has shape `[rows, cols]` (PyTorch's `[out, in]` for a weight), and
    /// [`GgufFile::dequantize`]'s values are row-major for this shape.
    pub fn shape(&self) -> Vec<usize> {
        // `read` checked that the element count, hence every extent, fits in usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file, borrowing the bytes it was read from for the tensor data.
#[derive(Clone)]
pub struct GgufFile<'a> {
    what: &'static str,
    bytes: &'a [u8],
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    keys: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    names: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("what", &self.what)
            .field("len", &self.bytes.len())
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn bad(what: &'static str, detail: impl fmt::Display) -> Error {
    Error::BadFile {
        what,
        detail: detail.to_string(),
    }
}

/// Puts `context` in front of a `BadFile` detail.
fn within(e: Error, context: impl fmt::Display) -> Error {
    match e {
        Error::BadFile { what, detail } => bad(what, format!("{context}: {detail}")),
        other => other,
    }
}

/// Reads bytes front to back; every read is checked against what is left.
struct Cursor<'a> {
    what: &'static str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, thing: &str) -> Result<&'a [u8]> {
        let end = (n <= self.left()).then(|| self.pos + n as usize);
        let slice = end.and_then(|end| self.bytes.get(self.pos..end));
        let slice = slice.ok_or_else(|| {
            bad(
                self.what,
                format!(
                    "{thing} needs {n} bytes at byte {}, but the file ends at byte {}",
                    self.pos,
                    self.bytes.len()
                ),
            )
        })?;
        self.pos += slice.len();
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, thing: &str) -> Result<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N as u64, thing)?);
        Ok(out)
    }

    fn u32(&mut self, thing: &str) -> Result<u32> {
        self.array(thing).map(u32::from_le_bytes)
    }

    fn u64(&mut self, thing: &str) -> Result<u64> {
        self.array(thing).map(u64::from_le_bytes)
    }

    /// Refuses `count` items of at least `min_size` bytes each when fewer bytes are left.
    fn check_count(&self, count: u64, min_size: u64, thing: &str) -> Result<()> {
        if count > self.left() / min_size {
            return Err(bad(
                self.what,
                format!(
                    "{count} {thing} cannot fit in the {} bytes left after byte {} \
                     (each takes at least {min_size})",
                    self.left(),
                    self.pos
                ),
            ));
        }
        Ok(())
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo> {
        let name = self.string("a tensor name")?;
        let context = |e| within(e, format!("tensor {name}"));
        let n_dims = self.u32("n_dims").map_err(context)?;
        if n_dims > MAX_DIMS {
            return Err(context(bad(
                self.what,
                format!("{n_dims} dimensions, over ggml's {MAX_DIMS}"),
            )));
        }
        let dims = (0..n_dims)
            .map(|_| self.u64("a dimension"))
            .collect::<Result<Vec<u64>>>()
            .map_err(context)?;
        let ggml_type = GgmlType(self.u32("the ggml type").map_err(context)?);
        let offset = self.u64("the offset").map_err(context)?;
        let n_bytes = data_size(&dims, ggml_type).map_err(|d| context(bad(self.what, d)))?;
        if offset % alignment != 0 {
            return Err(context(bad(
                self.what,
                format!("offset {offset} is not a multiple of the alignment {alignment}"),
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            n_bytes,
        })
    }
}

/// Bytes of data for these extents and type; every product checked.
fn data_size(dims: &[u64], ty: GgmlType) -> Result<u64, String> {
    if let Some(d) = dims.iter().position(|&d| d == 0 || d > i64::MAX as u64) {
        return Err(format!(
            "ne[{d}] = {} in {dims:?} is not between 1 and 2^63 - 1",
            dims[d]
        ));
    }
    let n = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
    let n = n
        .filter(|&n| n <= i64::MAX as u64 && usize::try_from(n).is_ok())
        .ok_or_else(|| format!("dims {dims:?} hold more values than this platform can address"))?;
    let (block, block_bytes) = ty
        .block_layout()
        .ok_or_else(|| format!("{ty}: its size is unknown"))?;
    let row = dims.first().copied().unwrap_or(1);
    if row % block != 0 {
        return Err(format!(
            "ne[0] = {row} is not a multiple of {ty}'s block of {block}"
        ));
    }
    (n / block)
        .checked_mul(block_bytes)
        .ok_or_else(|| format!("dims {dims:?} of {ty} take more than 2^64 bytes"))
}

/// Parses GGUF bytes: header, metadata and tensor infos, all checked; the tensor data stays in
/// `bytes`, read through [`GgufFile::tensor_bytes`] and [`GgufFile::dequantize`]. `what` names
/// the file in errors.
pub fn read<'a>(what: &'static str, bytes: &'a [u8]) -> Result<GgufFile<'a>> {
    let mut cur = Cursor {
        what,
        bytes,
        pos: 0,
    };
    let magic = cur.array::<4>("the magic")?;
    if &magic != b"GGUF" {
        return Err(bad(what, format!("magic {magic:02x?} is not \"GGUF\"")));
    }
    let version = cur.u32("the version")?;
    if !(2..=VERSION).contains(&version) {
        // A big-endian file reads as version 2^24 or 3·2^24 here.
        let found = match version.swap_bytes() {
            v @ 2..=VERSION => format!("{v}, big-endian"),
            _ => version.to_string(),
        };
        return Err(Error::UnsupportedVersion {
            what,
            found,
            supported: VERSION,
        });
    }
    let tensor_count = cur.u64("the tensor count")?;
    let kv_count = cur.u64("the key/value count")?;
    cur.check_count(kv_count, MIN_KEY_VALUE, "key/values")?;
    // The smallest tensor infos must fit after the smallest key/values.
    let left = cur.left() - kv_count * MIN_KEY_VALUE;
    if tensor_count > left / MIN_TENSOR_INFO {
        cur.check_count(tensor_count, MIN_TENSOR_INFO, "tensor infos")?;
        return Err(bad(
            what,
            format!(
                "{tensor_count} tensor infos (at least {MIN_TENSOR_INFO} bytes each) cannot fit \
                 after {kv_count} key/values (at least {MIN_KEY_VALUE} bytes each) in the {} \
                 bytes after the header",
                cur.left()
            ),
        ));
    }

    let mut metadata = Vec::new();
    let mut keys = HashMap::new();
    for i in 0..kv_count {
        let key = cur
            .string("a key")
            .map_err(|e| within(e, format!("key/value {i} of {kv_count}")))?;
        let value = cur
            .value_type("the value type")
            .and_then(|ty| cur.value(ty, 0))
            .map_err(|e| within(e, format!("key {key}")))?;
        if keys.insert(key.clone(), metadata.len()).is_some() {
            return Err(bad(what, format!("key {key} appears twice")));
        }
        metadata.push((key, value));
    }

    let alignment = match keys.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(v) => v
            .as_u32()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| {
                bad(
                    what,
                    format!("general.alignment {v:?} is not a power of two"),
                )
            })?
            .into(),
    };

    let mut tensors = Vec::new();
    let mut names = HashMap::new();
    for i in 0..tensor_count {
        let info = cur
            .tensor_info(alignment)
            .map_err(|e| within(e, format!("tensor info {i} of {tensor_count}")))?;
        if names.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(bad(what, format!("tensor {} appears twice", info.name)));
        }
        tensors.push(info);
    }

    let data_offset = (cur.pos as u64).next_multiple_of(alignment);
    // Each tensor inside the file, then none overlapping its successor by offset.
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|start| start.checked_add(t.n_bytes));
        if end.is_none_or(|end| end > bytes.len() as u64) {
            return Err(bad(
                what,
                format!(
                    "tensor {} ({} bytes at offset {} of the data section at byte {data_offset}) \
                     runs past the end of the file at byte {}",
                    t.name,
                    t.n_bytes,
                    t.offset,
                    bytes.len()
                ),
            ));
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.n_bytes > b.offset {
            return Err(bad(
                what,
                format!(
                    "tensors {} (bytes {}..{}) and {} (from byte {}) overlap in the data section",
                    a.name,
                    a.offset,
                    a.offset + a.n_bytes,
                    b.name,
                    b.offset
                ),
            ));
        }
    }

    Ok(GgufFile {
        what,
        bytes,
        version,
        alignment,
        data_offset,
        metadata,
        keys,
        tensors,
        names,
    })
}

impl<'a> GgufFile<'a> {
    /// 3, or 2 for an older file of the same layout.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment: `general.alignment`, or 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Byte position of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Every key/value, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.keys.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Every tensor info, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.names
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| Error::MissingTensor {
                what: self.what,
                name: name.to_string(),
            })
    }

    /// The raw data of tensor `name`, of any known type, borrowed from the file.
    pub fn tensor_bytes(&self, name: &str) -> Result<&'a [u8]> {
        let t = self.tensor(name)?;
        // `read` checked this range lies inside the file.
        let start = (self.data_offset + t.offset) as usize;
        self.bytes
            .get(start..start + t.n_bytes as usize)
            .ok_or_else(|| bad(self.what, format!("tensor {name} lies outside the file")))
    }

    /// Tensor `name` as f32, row-major for [`TensorInfo::shape`]: see [`dequantize_bytes`].
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        dequantize_bytes(t.ggml_type, self.tensor_bytes(name)?)
            .map_err(|detail| bad(self.what, format!("tensor {name} is {detail}")))
    }
}

/// GGML data of `ggml_type` as f32: F32 as is, F16 widened, Q8_0 as d·q, Q4_1 as d·q + m,
/// each computed in f32 as ggml does (the CPU reference of the GPU's decoding). A partial
/// block is ignored; another type is refused with the reason.
pub fn dequantize_bytes(
    ggml_type: GgmlType,
    bytes: &[u8],
) -> std::result::Result<Vec<f32>, String> {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::new();
    match ggml_type {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(f16)),
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(34) {
                let d = f16(&block[..2]);
                out.extend(block[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_1 => {
            for block in bytes.chunks_exact(20) {
                let (d, m) = (f16(&block[..2]), f16(&block[2..4]));
                // Low nibbles are elements 0..16, high nibbles 16..32.
                let qs = &block[4..];
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0F) + m));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
            }
        }
        other => {
            return Err(format!(
                "{other}; spectune dequantizes F32, F16, Q8_0 and Q4_1"
            ))
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_data_sizes() {
        // Q4_1 3×64: 6 blocks of 20 bytes; Q8_0 96: 3 blocks of 34; F16 5×3: 15 × 2.
        assert_eq!(data_size(&[64, 3], GgmlType::Q4_1), Ok(120));
        assert_eq!(data_size(&[96], GgmlType::Q8_0), Ok(102));
        assert_eq!(data_size(&[3, 5], GgmlType::F16), Ok(30));
        assert_eq!(data_size(&[], GgmlType::F32), Ok(4));
        assert!(data_size(&[16], GgmlType::Q4_1).is_err());
        assert!(data_size(&[32, 0], GgmlType::Q4_1).is_err());
        assert!(data_size(&[u64::MAX], GgmlType::F32).is_err());
        assert!(data_size(&[1 << 62, 4], GgmlType::F32).is_err());
        assert!(data_size(&[32], GgmlType(5)).is_err());
    }

    #[test]
    fn gguf_value_type_ids_round_trip() {
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).map(|t| t as u32), Some(id));
        }
        assert_eq!(ValueType::from_id(13), None);
    }
}
