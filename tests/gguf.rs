//! GGUF reading (no GPU). Against the `gguf` package that llama.cpp's converters use (PyPI `gguf`,
//! run by tests/python/gguf_ref.py): metadata of every value type, nested arrays included, comes
//! back exactly, and F32, F16, Q8_0 and Q4_1 tensors dequantize to the package's values bit for
//! bit. On bytes built by hand: every kind of bad file — wrong magic or version, cut at any byte,
//! counts and lengths of 2^60, offsets past the end, misaligned or overlapping, zero or
//! overflowing dims, unknown types — is a named error, never a panic or a huge allocation.
//!
//! Python: $SPECTUNE_PYTHON, else the repo's .venv/bin/python (scripts/setup.sh installs gguf
//! there). Without it the reference tests skip, except with CI=true, where they fail.
#![cfg(not(target_arch = "wasm32"))]

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::json;
use spectune::io::gguf::{read, Array, GgmlType, Value, ValueType};
use spectune::Error;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/gguf_ref.py");

fn skip_or_fail(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {msg}");
    }
    eprintln!("skipping gguf reference test: {msg}");
}

/// The interpreter, once it is known to import gguf; `None` to skip.
fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var("SPECTUNE_PYTHON").unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into()
            });
            let problem = match Command::new(&python).args(["-c", "import gguf"]).output() {
                Ok(out) if out.status.success() => return Some(python),
                Ok(out) => String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string(),
                Err(e) => e.to_string(),
            };
            skip_or_fail(&format!(
                "{python} cannot import gguf ({problem}); run scripts/setup.sh"
            ));
            None
        })
        .as_deref()
}

/// The file gguf_ref.py writes (with `general.alignment` = `alignment` if given) and what it
/// says a reader must find in it.
fn reference(alignment: Option<u32>) -> Option<(Vec<u8>, serde_json::Value)> {
    let python = python()?;
    let tag = alignment.map_or("default".to_string(), |a| a.to_string());
    let path = std::env::temp_dir().join(format!(
        "spectune-gguf-ref-{}-{tag}.gguf",
        std::process::id()
    ));
    let mut cmd = Command::new(python);
    cmd.arg(SCRIPT).arg(&path);
    if let Some(a) = alignment {
        cmd.arg(a.to_string());
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {python} {SCRIPT}: {e}"));
    assert!(
        out.status.success(),
        "{SCRIPT} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    Some((bytes, serde_json::from_slice(&out.stdout).unwrap()))
}

/// A value in gguf_ref.py's JSON form: floats as their bits, so equality is exact.
fn value_json(value: &Value) -> serde_json::Value {
    let scalar = match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::F32(v) => json!(v.to_bits()),
        Value::Bool(v) => json!(v),
        Value::String(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::F64(v) => json!(v.to_bits()),
        Value::Array(a) => {
            let mut out = array_json(a);
            out["type"] = json!("array");
            return out;
        }
    };
    json!({"type": value.value_type().name(), "value": scalar})
}

fn array_json(array: &Array) -> serde_json::Value {
    let values = match array {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::F32(v) => json!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => json!(v.iter().map(array_json).collect::<Vec<_>>()),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F64(v) => json!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
    };
    json!({"items": array.item_type().name(), "values": values})
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_against_reference(alignment: Option<u32>) {
    let Some((bytes, expected)) = reference(alignment) else {
        return;
    };
    let file = read("reference file", &bytes).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), expected["alignment"].as_u64().unwrap());
    assert_eq!(file.data_offset() % file.alignment(), 0);

    let metadata: Vec<serde_json::Value> = file
        .metadata()
        .iter()
        .map(|(key, value)| json!([key, value_json(value)]))
        .collect();
    assert_eq!(json!(metadata), expected["metadata"]);

    let tensors = expected["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), tensors.len());
    for (info, want) in file.tensors().iter().zip(tensors) {
        let name = want["name"].as_str().unwrap();
        assert_eq!(info.name, name);
        assert_eq!(json!(info.ggml_type.0), want["ggml_type"], "{name}");
        // numpy's shape is row-major: GGUF's ne reversed.
        assert_eq!(json!(info.shape()), want["shape"], "{name}");
        let mut dims = info.dims.clone();
        dims.reverse();
        assert_eq!(json!(dims), want["shape"], "{name}");
        assert_eq!(info.offset % file.alignment(), 0, "{name}");
        let raw = file.tensor_bytes(name).unwrap();
        assert_eq!(hex(raw), want["bytes"].as_str().unwrap(), "{name}");
        if let Some(values) = want.get("values") {
            // Exact: ggml and gguf-py compute d·q (+ m) in f32 with one rounding per operation,
            // as `dequantize` does, so the bits must agree; any difference is a bug in the
            // block layout, not rounding.
            let got: Vec<u32> = file
                .dequantize(name)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want: Vec<u32> = serde_json::from_value(values.clone()).unwrap();
            assert_eq!(got.len(), want.len(), "{name}");
            if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                panic!(
                    "{name}[{i}]: {} != gguf-py's {}",
                    f32::from_bits(got[i]),
                    f32::from_bits(want[i])
                );
            }
        } else {
            let err = file.dequantize(name).unwrap_err().to_string();
            assert!(err.contains("Q4_0 (ggml type 2)"), "{err}");
        }
    }

    // The getters a Llama loader uses.
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(file.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        file.get_f32("llama.attention.layer_norm_rms_epsilon")
            .unwrap(),
        1e-5
    );
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens[..3], ["<|im_start|>", "Ġthe", ""]);
    assert_eq!(
        file.get_str_array("tokenizer.ggml.merges").unwrap(),
        ["Ġ t", "h e", "Ġt he"]
    );
    assert_eq!(
        file.get_i64_array("tokenizer.ggml.token_type").unwrap(),
        [3, 1, 1, 1, 1, 1, 1]
    );
    assert!(file
        .get_str("tokenizer.chat_template")
        .unwrap()
        .starts_with("{% for message in messages %}"));
    assert_eq!(file.get_u64("test.u64").unwrap(), u64::MAX);
    assert_eq!(file.get_i64("test.i8").unwrap(), -128);
    assert_eq!(file.get_u32("test.u8").unwrap(), 255);
    assert!(file.get_bool("test.bool.true").unwrap());
    assert_eq!(
        file.get_f32_array("test.array.f32").unwrap(),
        [0.5, -3.25, 1e-30, 3.4e38]
    );
    assert_eq!(file.get_i64_array("test.array.u8").unwrap(), [0, 1, 255]);
    assert_eq!(file.get_array("test.array.nested").unwrap().len(), 3);
}

#[test]
fn matches_gguf_py_with_default_alignment() {
    check_against_reference(None);
}

#[test]
fn matches_gguf_py_with_alignment_64() {
    check_against_reference(Some(64));
}

#[test]
fn block_layouts_match_gguf_py() {
    let Some((_, expected)) = reference(None) else {
        return;
    };
    let sizes = expected["quant_sizes"].as_object().unwrap();
    for id in 0..64u32 {
        let want = sizes
            .get(&id.to_string())
            .map(|v| (v[0].as_u64().unwrap(), v[1].as_u64().unwrap()));
        assert_eq!(GgmlType(id).block_layout(), want, "ggml type {id}");
    }
}

// ---- Hand-built files ------------------------------------------------------------------------

fn string(s: &[u8]) -> Vec<u8> {
    [&(s.len() as u64).to_le_bytes()[..], s].concat()
}

/// A key/value: key, value type id, the value's bytes.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    [&string(key.as_bytes())[..], &ty.to_le_bytes(), value].concat()
}

/// An array value: item type, count, items.
fn array(item: u32, count: u64, items: &[u8]) -> Vec<u8> {
    [&item.to_le_bytes()[..], &count.to_le_bytes(), items].concat()
}

fn tensor_info(name: &str, dims: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut out = string(name.as_bytes());
    out.extend((dims.len() as u32).to_le_bytes());
    dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
    out.extend(ty.to_le_bytes());
    out.extend(offset.to_le_bytes());
    out
}

fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    [
        &b"GGUF"[..],
        &version.to_le_bytes(),
        &n_tensors.to_le_bytes(),
        &n_kv.to_le_bytes(),
    ]
    .concat()
}

/// A version 3 file: header, key/values, tensor infos, zeros to a multiple of 32, data.
fn file(kvs: &[Vec<u8>], infos: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
    let mut out = header(3, infos.len() as u64, kvs.len() as u64);
    kvs.iter().chain(infos).for_each(|b| out.extend(b));
    out.resize(out.len().next_multiple_of(32), 0);
    out.extend(data);
    out
}

const F16_HALF: [u8; 2] = 0x3800u16.to_le_bytes();
const F16_MINUS_ONE: [u8; 2] = 0xBC00u16.to_le_bytes();

/// A small valid file: three kinds of key/value; an F32 [2] at 0, a Q8_0 [32] at 32 and a
/// Q4_1 [32] at 96, the last ending exactly at the end of the file.
fn small_valid() -> Vec<u8> {
    let kvs = [
        kv("general.architecture", 8, &string(b"llama")),
        kv("llama.block_count", 4, &2u32.to_le_bytes()),
        kv(
            "tokenizer.ggml.tokens",
            9,
            &array(8, 2, &[string(b"a"), string("Ġb".as_bytes())].concat()),
        ),
    ];
    let infos = [
        tensor_info("norm", &[2], 0, 0),
        tensor_info("embd", &[32], 8, 32),
        tensor_info("proj", &[32], 3, 96),
    ];
    let mut data = [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat();
    data.resize(32, 0);
    // Q8_0: d = 0.5, q = -16..16.
    data.extend(F16_HALF);
    data.extend((-16i8..16).map(|q| q as u8));
    data.resize(96, 0);
    // Q4_1: d = 0.5, m = -1; byte j holds element j (low nibble) and element j + 16 (high).
    data.extend(F16_HALF);
    data.extend(F16_MINUS_ONE);
    data.extend((0u8..16).map(|j| j | ((15 - j) << 4)));
    file(&kvs, &infos, &data)
}

fn bad_file_message(bytes: &[u8]) -> String {
    match read("test file", bytes) {
        Err(Error::BadFile {
            what: "test file",
            detail,
        }) => detail,
        other => panic!("expected a BadFile error, got {other:?}"),
    }
}

/// The BadFile detail, which must contain every one of `needles`.
fn refused(bytes: &[u8], needles: &[&str]) -> String {
    let detail = bad_file_message(bytes);
    for needle in needles {
        assert!(
            detail.contains(needle),
            "{detail:?} does not mention {needle:?}"
        );
    }
    detail
}

#[test]
fn hand_built_file_reads_and_dequantizes() {
    let bytes = small_valid();
    let f = read("test file", &bytes).unwrap();
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["a", "Ġb"]
    );
    assert_eq!(f.dequantize("norm").unwrap(), [1.5, -2.0]);
    let q8: Vec<f32> = (-16..16).map(|q| q as f32 * 0.5).collect();
    assert_eq!(f.dequantize("embd").unwrap(), q8);
    let low = (0..16).map(|j| j as f32 * 0.5 - 1.0);
    let high = (0..16).map(|j| (15 - j) as f32 * 0.5 - 1.0);
    assert_eq!(
        f.dequantize("proj").unwrap(),
        low.chain(high).collect::<Vec<_>>()
    );
    assert_eq!(f.tensor("embd").unwrap().shape(), [32]);
    assert_eq!(f.tensor_bytes("proj").unwrap().len(), 20);
    assert!(matches!(
        f.dequantize("nope"),
        Err(Error::MissingTensor { name, .. }) if name == "nope"
    ));

    // A matrix: ne = [cols, rows] is shape [rows, cols], values row-major.
    let values: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = file(&[], &[tensor_info("w", &[3, 2], 0, 0)], &data);
    let f = read("test file", &bytes).unwrap();
    assert_eq!(f.tensor("w").unwrap().shape(), [2, 3]);
    assert_eq!(f.tensor("w").unwrap().dims, [3, 2]);
    assert_eq!(f.dequantize("w").unwrap(), values);

    // No tensors, and no padding after the infos: still a file. An empty array keeps its type.
    let bytes = [header(3, 0, 1), kv("empty", 9, &array(5, 0, &[]))].concat();
    let f = read("test file", &bytes).unwrap();
    assert_eq!(f.get_array("empty").unwrap(), &Array::I32(vec![]));
    assert_eq!(f.get_i64_array("empty").unwrap(), Vec::<i64>::new());
}

#[test]
fn magic_and_version_are_checked() {
    let mut bytes = small_valid();
    bytes[3] = b'X';
    refused(&bytes, &["magic"]);
    for (version, found) in [
        (1, "1"),
        (4, "4"),
        (0, "0"),
        (3u32.swap_bytes(), "3, big-endian"),
    ] {
        let mut bytes = small_valid();
        bytes[4..8].copy_from_slice(&u32::to_le_bytes(version));
        match read("test file", &bytes) {
            Err(Error::UnsupportedVersion {
                found: f,
                supported: 3,
                ..
            }) => assert_eq!(f, found),
            other => panic!("version {version}: {other:?}"),
        }
    }
    // Version 2 has the same layout.
    let mut bytes = small_valid();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(read("test file", &bytes).unwrap().version(), 2);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = small_valid();
    assert!(read("test file", &bytes).is_ok());
    for cut in 0..bytes.len() {
        let detail = bad_file_message(&bytes[..cut]);
        if cut % 16 == 0 {
            eprintln!("cut at {cut}: {detail}");
        }
    }
}

#[test]
fn huge_counts_and_lengths_are_refused_at_once() {
    let start = Instant::now();
    let huge = 1u64 << 60;
    // Counts in the header.
    refused(
        &[header(3, huge, 0), vec![0; 64]].concat(),
        &["1152921504606846976 tensor infos"],
    );
    refused(
        &[header(3, 0, huge), vec![0; 64]].concat(),
        &["1152921504606846976 key/values"],
    );
    refused(
        &[header(3, u64::MAX, u64::MAX), vec![0; 64]].concat(),
        &["key/values"],
    );
    refused(
        &[header(3, 3, 0), vec![0; 64]].concat(),
        &["3 tensor infos"],
    );
    // A key length, a string value, arrays of bytes, strings and arrays.
    let mut long_key = huge.to_le_bytes().to_vec();
    long_key.extend(b"key");
    refused(
        &file(&[long_key], &[], &[]),
        &["key/value 0 of 1", "1152921504606846976 bytes"],
    );
    refused(
        &file(&[kv("k", 8, &huge.to_le_bytes())], &[], &[]),
        &["key k", "a string needs"],
    );
    for item in [0u32, 8, 9, 12] {
        let detail = refused(
            &file(&[kv("k", 9, &array(item, huge, &[0; 32]))], &[], &[]),
            &["key k", "1152921504606846976", "array items of type"],
        );
        eprintln!("array of type {item}: {detail}");
    }
    // A tensor name.
    let mut long_name = huge.to_le_bytes().to_vec();
    long_name.extend([0; 40]);
    refused(
        &file(&[], &[long_name], &[]),
        &["tensor info 0 of 1", "a tensor name"],
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn offsets_are_checked() {
    let data = [0u8; 64];
    let one = |offset, dims: &[u64]| file(&[], &[tensor_info("t", dims, 0, offset)], &data);
    refused(&one(64, &[2]), &["tensor t", "runs past the end"]);
    refused(&one(0, &[17]), &["68 bytes", "runs past the end"]);
    refused(&one(u64::MAX - 31, &[2]), &["runs past the end"]);
    refused(
        &one(4, &[2]),
        &["tensor t", "offset 4 is not a multiple of the alignment 32"],
    );
    let data = [0u8; 128];
    // a: 36 bytes, b: 8 bytes.
    let two = |a: u64, b: u64| {
        file(
            &[],
            &[tensor_info("a", &[9], 0, a), tensor_info("b", &[2], 0, b)],
            &data,
        )
    };
    refused(
        &two(0, 32),
        &["tensors a (bytes 0..36) and b (from byte 32) overlap"],
    );
    refused(
        &two(32, 64),
        &["tensors a (bytes 32..68) and b (from byte 64) overlap"],
    );
    refused(&two(32, 32), &["overlap"]);
    refused(&two(64, 0)[..190], &["runs past the end"]);
    assert!(read("test file", &two(64, 0)).is_ok());
    assert!(read("test file", &two(0, 64)).is_ok());
    // A custom alignment moves the data section and the rule for offsets.
    let kvs = [kv("general.alignment", 4, &64u32.to_le_bytes())];
    let bytes = file(&kvs, &[tensor_info("t", &[2], 0, 32)], &data);
    refused(&bytes, &["offset 32 is not a multiple of the alignment 64"]);
    for bad in [0u32, 3, 48] {
        let kvs = [kv("general.alignment", 4, &bad.to_le_bytes())];
        refused(
            &file(&kvs, &[], &[]),
            &["general.alignment", "power of two"],
        );
    }
    let kvs = [kv("general.alignment", 8, &string(b"32"))];
    refused(&file(&kvs, &[], &[]), &["general.alignment"]);
}

#[test]
fn dims_and_types_are_checked() {
    let data = [0u8; 256];
    let one = |dims: &[u64], ty| file(&[], &[tensor_info("t", dims, ty, 0)], &data);
    refused(&one(&[4, 0], 0), &["tensor t", "ne[1] = 0"]);
    refused(&one(&[1 << 63], 0), &["ne[0] = 9223372036854775808"]);
    refused(&one(&[1 << 32, 1 << 32], 0), &["more values than"]);
    refused(&one(&[1 << 31, 1 << 31, 4], 0), &["more values than"]);
    refused(&one(&[1; 5], 0), &["5 dimensions"]);
    refused(
        &one(&[33], 8),
        &["ne[0] = 33 is not a multiple of Q8_0 (ggml type 8)'s block of 32"],
    );
    refused(&one(&[32], 99), &["unknown ggml type 99"]);
    refused(&one(&[32], 4), &["unknown ggml type 4"]);
    // A type spectune does not dequantize: listed, readable as bytes, an error to dequantize.
    let bytes = one(&[256], 12);
    let f = read("test file", &bytes).unwrap();
    assert_eq!(f.tensors()[0].ggml_type.name(), Some("Q4_K"));
    assert_eq!(f.tensor_bytes("t").unwrap().len(), 144);
    let err = f.dequantize("t").unwrap_err().to_string();
    assert!(err.contains("tensor t is Q4_K (ggml type 12)"), "{err}");
    // No dimensions: one value, as ggml reads it.
    let bytes = one(&[], 0);
    let f = read("test file", &bytes).unwrap();
    assert_eq!(f.tensors()[0].shape(), Vec::<usize>::new());
    assert_eq!(f.dequantize("t").unwrap(), [0.0]);
    // The same name twice.
    let bytes = file(
        &[],
        &[tensor_info("t", &[2], 0, 0), tensor_info("t", &[2], 0, 32)],
        &data,
    );
    refused(&bytes, &["tensor t appears twice"]);
}

#[test]
fn metadata_is_checked() {
    refused(
        &file(&[kv("k", 4, &[0; 4]), kv("k", 4, &[0; 4])], &[], &[]),
        &["key k appears twice"],
    );
    refused(
        &file(&[kv("k", 13, &[0; 8])], &[], &[]),
        &["key k", "13, not a GGUF value type"],
    );
    refused(
        &file(&[kv("k", 9, &array(99, 1, &[0; 8]))], &[], &[]),
        &["99, not a GGUF value type"],
    );
    refused(&file(&[kv("k", 7, &[2])], &[], &[]), &["bool", "is 2"]);
    refused(
        &file(&[kv("k", 8, &string(&[0xff, 0xfe]))], &[], &[]),
        &["not UTF-8"],
    );
    let mut key = string(&[0xc3]);
    key.extend(4u32.to_le_bytes());
    key.extend([0; 4]);
    refused(&file(&[key], &[], &[]), &["key/value 0 of 1", "not UTF-8"]);
    // Arrays nested 8 deep read; 9 deep are refused before the stack could be at risk.
    let nest = |depth: usize| {
        // depth − 1 arrays of one array, around an array of one u32.
        let mut value = [9u32.to_le_bytes(), [1, 0, 0, 0], [0; 4]]
            .concat()
            .repeat(depth - 1);
        value.extend(array(4, 1, &7u32.to_le_bytes()));
        file(&[kv("k", 9, &value)], &[], &[])
    };
    assert!(read("test file", &nest(8)).is_ok());
    refused(&nest(9), &["nested more than 8 deep"]);
    refused(&nest(100_000), &["nested more than 8 deep"]);

    // Getters: absent keys and other types are errors that name the key and the type.
    let bytes = file(
        &[
            kv("neg", 5, &(-1i32).to_le_bytes()),
            kv("big", 10, &(1u64 << 40).to_le_bytes()),
            kv("f64", 12, &0.1f64.to_le_bytes()),
            kv("ints", 9, &array(10, 1, &u64::MAX.to_le_bytes())),
        ],
        &[],
        &[],
    );
    let f = read("test file", &bytes).unwrap();
    let message = |r: spectune::Result<_>| match r {
        Err(Error::BadFile { detail, .. }) => detail,
        other => panic!("expected a BadFile error, got {other:?}"),
    };
    assert_eq!(
        message(f.get_u32("nope").map(drop)),
        "metadata key nope is missing"
    );
    assert_eq!(
        message(f.get_u32("neg").map(drop)),
        "metadata key neg is i32, not an integer that fits in u32"
    );
    assert_eq!(f.get_i64("neg").unwrap(), -1);
    assert!(f.get_u32("big").is_err());
    assert_eq!(f.get_u64("big").unwrap(), 1 << 40);
    assert_eq!(f.get_f32("f64").unwrap(), 0.1f32);
    assert_eq!(
        message(f.get_str("f64").map(drop)),
        "metadata key f64 is f64, not a string"
    );
    assert_eq!(
        message(f.get_str_array("ints").map(drop)),
        "metadata key ints is array of u64, not an array of strings"
    );
    assert!(f.get_i64_array("ints").is_err());
    assert_eq!(f.get("neg").map(Value::value_type), Some(ValueType::I32));
}

#[test]
fn random_byte_flips_never_panic() {
    // Seeded xorshift: 3000 copies of the small file with 1 to 4 bytes overwritten. Each must be
    // a value or an error; whatever reads is then used, and that must not panic either.
    let valid = small_valid();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut read_ok = 0;
    for _ in 0..3000 {
        let mut bytes = valid.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if let Ok(f) = read("test file", &bytes) {
            read_ok += 1;
            for t in f.tensors() {
                let _ = f.dequantize(&t.name);
                assert_eq!(f.tensor_bytes(&t.name).unwrap().len() as u64, t.n_bytes);
                assert_eq!(t.shape().iter().product::<usize>() as u64, t.n_elements());
            }
            for (key, _) in f.metadata() {
                let _ = (f.get_u64(key), f.get_str_array(key), f.get_f32(key));
            }
        }
    }
    eprintln!("{read_ok} of 3000 altered files still read");
}
