//! Safetensors reading (no GPU): values come back exactly, F16/BF16 widen to f32, and every kind
//! of bad file — truncated, lying offsets, a huge header, an unsupported dtype, a missing
//! tensor — is a named error, never a panic or an allocation of the size a file claims.

use std::collections::HashMap;

use spectune::io::safetensors::{read, write_f32, NamedTensor};
use spectune::Error;

/// A file from a JSON header and raw data bytes.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
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

#[test]
fn round_trip_keeps_values_names_and_metadata() {
    let tensors = vec![
        NamedTensor::new(
            "encoder.layer.0.weight",
            &[2, 3],
            vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, 1e30],
        ),
        NamedTensor::new("bias", &[3], vec![0.5, 0.25, -0.125]),
    ];
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = write_f32("test file", &tensors, meta.clone()).unwrap();
    let back = read("test file", &bytes).unwrap();
    assert_eq!(back.metadata, meta);
    for t in &tensors {
        assert_eq!(back.get(&t.name), Some(t));
    }
    assert_eq!(
        back.require("test file", "bias", &[3]).unwrap().values,
        tensors[1].values
    );
}

#[test]
fn half_precision_widens_exactly() {
    // 1.0, −2.0, 0.5 in F16 (0x3C00, 0xC000, 0x3800) and BF16 (0x3F80, 0xC000, 0x3F00).
    let f16: Vec<u8> = [0x3C00u16, 0xC000, 0x3800]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [0x3F80u16, 0xC000, 0x3F00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let header = r#"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[6,12]}}"#;
    let back = read("test file", &file(header, &[f16, bf16].concat())).unwrap();
    assert_eq!(back.get("h").unwrap().values, vec![1.0, -2.0, 0.5]);
    assert_eq!(back.get("b").unwrap().values, vec![1.0, -2.0, 0.5]);
}

#[test]
fn bad_files_are_named_errors() {
    let valid = file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    assert!(read("test file", &valid).is_ok());
    // Truncated: in the data, in the header, in the length prefix.
    for cut in [valid.len() - 3, 20, 5, 0] {
        let detail = bad_file_message(&valid[..cut]);
        eprintln!("truncated to {cut}: {detail}");
    }
    // Overlapping offsets.
    eprintln!(
        "overlap: {}",
        bad_file_message(&file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 12]
        ))
    );
    // Offsets past the end of the data.
    eprintln!(
        "past the end: {}",
        bad_file_message(&file(
            r#"{"a":{"dtype":"F32","shape":[200],"data_offsets":[0,800]}}"#,
            &[0; 8]
        ))
    );
    // Offsets that disagree with the shape.
    eprintln!(
        "shape vs offsets: {}",
        bad_file_message(&file(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8]
        ))
    );
    // A header that claims a terabyte: refused before any allocation of that size.
    let mut huge = valid.clone();
    huge[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    eprintln!("huge header: {}", bad_file_message(&huge));
    // A header that is not JSON.
    eprintln!("not JSON: {}", bad_file_message(&file("{not json", &[])));
    // A dtype we do not read: listed apart, and an error when required.
    let f = read(
        "test file",
        &file(
            r#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    )
    .unwrap();
    assert_eq!(f.other_dtypes, vec![("ids".to_string(), "I64".to_string())]);
    let err = f.require("test file", "ids", &[1]).unwrap_err().to_string();
    assert!(err.contains("ids") && err.contains("I64"), "{err}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let bytes = file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let f = read("model file", &bytes).unwrap();
    match f.require(
        "model file",
        "encoder.layer.0.attention.self.query.weight",
        &[384, 384],
    ) {
        Err(Error::MissingTensor {
            what: "model file",
            name,
        }) => assert_eq!(name, "encoder.layer.0.attention.self.query.weight"),
        other => panic!("{other:?}"),
    }
    let err = f.require("model file", "a", &[3]).unwrap_err();
    assert!(
        err.to_string().contains("[2]") && err.to_string().contains("[3]"),
        "{err}"
    );
}
