//! spectune::io::bpe on small hand-built GGUFs, so these run without any asset: a 260-token
//! byte-level vocabulary that encodes, decodes and renders ChatML, then every kind of missing or
//! malformed tokenizer metadata, each a named error (Error::BadFile from the GGUF reader for a
//! missing or mistyped key, Error::Tokenizer for the rest), never a panic.
#![cfg(not(target_arch = "wasm32"))]

use spectune::io::bpe::BpeTokenizer;
use spectune::io::gguf;
use spectune::Error;

const STRING: u32 = 8;
const ARRAY: u32 = 9;
const I32: u32 = 5;
const U32: u32 = 4;
const BOOL: u32 = 7;

fn string(s: &str) -> Vec<u8> {
    [&(s.len() as u64).to_le_bytes()[..], s.as_bytes()].concat()
}

/// A key/value: key, value type id, the value's bytes.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    [&string(key)[..], &ty.to_le_bytes(), value].concat()
}

fn str_kv(key: &str, value: &str) -> Vec<u8> {
    kv(key, STRING, &string(value))
}

fn u32_kv(key: &str, value: u32) -> Vec<u8> {
    kv(key, U32, &value.to_le_bytes())
}

fn strs_kv(key: &str, items: &[&str]) -> Vec<u8> {
    let body: Vec<u8> = items.iter().flat_map(|s| string(s)).collect();
    let count = (items.len() as u64).to_le_bytes();
    kv(
        key,
        ARRAY,
        &[&STRING.to_le_bytes()[..], &count, &body].concat(),
    )
}

fn i32s_kv(key: &str, items: &[i32]) -> Vec<u8> {
    let body: Vec<u8> = items.iter().flat_map(|v| v.to_le_bytes()).collect();
    let count = (items.len() as u64).to_le_bytes();
    kv(
        key,
        ARRAY,
        &[&I32.to_le_bytes()[..], &count, &body].concat(),
    )
}

/// A version 3 file of key/values and no tensors.
fn file(kvs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = [&b"GGUF"[..], &3u32.to_le_bytes(), &0u64.to_le_bytes()].concat();
    out.extend((kvs.len() as u64).to_le_bytes());
    kvs.iter().for_each(|b| out.extend(b));
    out.resize(out.len().next_multiple_of(32), 0);
    out
}

/// A tiny byte-level vocabulary: the 256 byte characters, "ab", "Ġab", and two control tokens.
fn tiny_tokens() -> Vec<String> {
    let printable = |b: u32| matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
    let mut shifted = 0x100;
    let mut tokens: Vec<String> = (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                shifted += 1;
                shifted - 1
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect();
    tokens.extend(["ab", "Ġab", "<|im_start|>", "<|im_end|>"].map(String::from));
    tokens
}

/// The key/values of a valid tiny tokenizer, with `replace` swapped in by key (or added) and
/// the keys in `drop` left out.
fn tiny(replace: &[(&str, Vec<u8>)], drop: &[&str]) -> Vec<u8> {
    let tokens = tiny_tokens();
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut types = vec![1; tokens.len()];
    let n = types.len();
    types[n - 2..].fill(3);
    let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + \
                    message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if \
                    add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let mut kvs: Vec<(&str, Vec<u8>)> = vec![
        (
            "general.architecture",
            str_kv("general.architecture", "llama"),
        ),
        (
            "tokenizer.ggml.model",
            str_kv("tokenizer.ggml.model", "gpt2"),
        ),
        ("tokenizer.ggml.pre", str_kv("tokenizer.ggml.pre", "smollm")),
        (
            "tokenizer.ggml.tokens",
            strs_kv("tokenizer.ggml.tokens", &token_refs),
        ),
        (
            "tokenizer.ggml.token_type",
            i32s_kv("tokenizer.ggml.token_type", &types),
        ),
        (
            "tokenizer.ggml.merges",
            strs_kv("tokenizer.ggml.merges", &["a b", "Ġ ab"]),
        ),
        (
            "tokenizer.ggml.eos_token_id",
            u32_kv("tokenizer.ggml.eos_token_id", 259),
        ),
        (
            "tokenizer.chat_template",
            str_kv("tokenizer.chat_template", template),
        ),
    ];
    for (key, value) in replace {
        match kvs.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.clone(),
            None => kvs.push((key, value.clone())),
        }
    }
    kvs.retain(|(k, _)| !drop.contains(k));
    file(&kvs.into_iter().map(|(_, v)| v).collect::<Vec<_>>())
}

fn load(bytes: &[u8]) -> spectune::Result<BpeTokenizer> {
    BpeTokenizer::from_gguf(&gguf::read("test GGUF", bytes)?)
}

/// The error's message, after checking its variant.
fn refused(bytes: &[u8], needles: &[&str]) -> String {
    let msg = match load(bytes) {
        Ok(_) => panic!("accepted, expected an error containing {needles:?}"),
        Err(e @ (Error::Tokenizer(_) | Error::BadFile { .. })) => e.to_string(),
        Err(e) => panic!("unexpected error kind: {e}"),
    };
    for needle in needles {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
    msg
}

#[test]
fn a_tiny_hand_built_tokenizer_works() {
    let tok = load(&tiny(&[], &[])).unwrap();
    assert_eq!(tok.vocab_size(), 260);
    assert_eq!(tok.encode("ab ab", false).unwrap(), [256, 257]);
    assert_eq!(
        tok.encode("ab12", false).unwrap(),
        [256, b'1' as u32, b'2' as u32]
    );
    assert_eq!(
        tok.encode("<|im_start|>ab<|im_end|>", false).unwrap(),
        [258, 256, 259]
    );
    assert_eq!(
        tok.decode(&[258, 257, 259]).unwrap(),
        "<|im_start|> ab<|im_end|>"
    );
    assert_eq!((tok.eos_id(), tok.bos_id()), (259, None));
    assert_eq!(
        tok.chat_prompt(&[("user", "ab")], true).unwrap(),
        "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n"
    );
    let gpt2 = load(&tiny(
        &[("tokenizer.ggml.pre", str_kv("tokenizer.ggml.pre", "gpt-2"))],
        &[],
    ));
    assert_eq!(gpt2.unwrap().encode("ab", false).unwrap(), [256]);
    // add_special follows the file's flags.
    let flags = [
        (
            "tokenizer.ggml.bos_token_id",
            u32_kv("tokenizer.ggml.bos_token_id", 258),
        ),
        (
            "tokenizer.ggml.add_bos_token",
            kv("tokenizer.ggml.add_bos_token", BOOL, &[1]),
        ),
        (
            "tokenizer.ggml.add_eos_token",
            kv("tokenizer.ggml.add_eos_token", BOOL, &[1]),
        ),
    ];
    let tok = load(&tiny(&flags, &[])).unwrap();
    assert_eq!(tok.encode("ab", true).unwrap(), [258, 256, 259]);
    assert_eq!(tok.encode("ab", false).unwrap(), [256]);
}

#[test]
fn a_gguf_without_tokenizer_metadata_is_an_error() {
    let bare = file(&[str_kv("general.architecture", "llama")]);
    refused(&bare, &["tokenizer.ggml.model", "missing"]);
    refused(
        &tiny(&[], &["tokenizer.ggml.tokens"]),
        &["tokenizer.ggml.tokens", "missing"],
    );
    refused(
        &tiny(&[], &["tokenizer.ggml.merges"]),
        &["tokenizer.ggml.merges", "missing"],
    );
    refused(
        &tiny(&[], &["tokenizer.ggml.pre"]),
        &["tokenizer.ggml.pre is missing"],
    );
    refused(
        &tiny(&[], &["tokenizer.ggml.eos_token_id"]),
        &["eos_token_id is missing"],
    );
    refused(
        &tiny(
            &[(
                "tokenizer.ggml.tokens",
                strs_kv("tokenizer.ggml.tokens", &[]),
            )],
            &[],
        ),
        &["holds 0 tokens"],
    );
}

#[test]
fn malformed_merges_are_errors_naming_the_entry() {
    for (merge, why) in [
        ("ab", "not two tokens separated by one space"),
        ("a  b", "not two tokens separated by one space"),
        ("a b c", "not two tokens separated by one space"),
        (" ab", "not two tokens separated by one space"),
        ("", "not two tokens separated by one space"),
        ("b a", "\"ba\" is not in tokenizer.ggml.tokens"),
        ("東 a", "\"東\" is not in tokenizer.ggml.tokens"),
    ] {
        let merges = strs_kv("tokenizer.ggml.merges", &["a b", merge]);
        refused(
            &tiny(&[("tokenizer.ggml.merges", merges)], &[]),
            &["tokenizer.ggml.merges[1]", why],
        );
    }
    let wrong_type = u32_kv("tokenizer.ggml.merges", 3);
    refused(
        &tiny(&[("tokenizer.ggml.merges", wrong_type)], &[]),
        &["tokenizer.ggml.merges", "not an array of strings"],
    );
}

#[test]
fn other_bad_tokenizer_metadata_is_named() {
    let cases: [(&str, Vec<u8>, &[&str]); 8] = [
        (
            "tokenizer.ggml.model",
            str_kv("tokenizer.ggml.model", "llama"),
            &["\"llama\"", "gpt2"],
        ),
        (
            "tokenizer.ggml.pre",
            str_kv("tokenizer.ggml.pre", "qwen2"),
            &["\"qwen2\"", "smollm"],
        ),
        (
            "tokenizer.ggml.pre",
            u32_kv("tokenizer.ggml.pre", 1),
            &["tokenizer.ggml.pre is a u32"],
        ),
        (
            "tokenizer.ggml.token_type",
            i32s_kv("tokenizer.ggml.token_type", &[1, 1, 3]),
            &["3 entries for 260 tokens"],
        ),
        (
            "tokenizer.ggml.eos_token_id",
            u32_kv("tokenizer.ggml.eos_token_id", 260),
            &["eos_token_id is 260, outside the vocabulary of 260"],
        ),
        (
            "tokenizer.ggml.bos_token_id",
            str_kv("tokenizer.ggml.bos_token_id", "1"),
            &["tokenizer.ggml.bos_token_id", "not an integer"],
        ),
        (
            "tokenizer.ggml.add_space_prefix",
            kv("tokenizer.ggml.add_space_prefix", BOOL, &[1]),
            &["add_space_prefix is true"],
        ),
        (
            "tokenizer.ggml.add_bos_token",
            u32_kv("tokenizer.ggml.add_bos_token", 1),
            &["tokenizer.ggml.add_bos_token", "not a bool"],
        ),
    ];
    for (key, value, needles) in cases {
        refused(&tiny(&[(key, value)], &[]), needles);
    }
    let mut tokens = tiny_tokens();
    tokens[257] = "ab".into();
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let dup = strs_kv("tokenizer.ggml.tokens", &refs);
    refused(
        &tiny(&[("tokenizer.ggml.tokens", dup)], &[]),
        &["\"ab\" twice, at ids 256 and 257"],
    );
}

#[test]
fn an_unrecognised_chat_template_is_refused_by_name() {
    let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}\
                  {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}{% endfor %}";
    let other = str_kv("tokenizer.chat_template", llama3);
    let tok = load(&tiny(&[("tokenizer.chat_template", other)], &[])).unwrap();
    let Err(Error::Tokenizer(msg)) = tok.chat_prompt(&[("user", "hi")], true) else {
        panic!("a Llama 3 template was rendered");
    };
    assert!(
        msg.contains("not a ChatML template") && msg.contains("{% set loop_messages"),
        "{msg}"
    );
    let none = load(&tiny(&[], &["tokenizer.chat_template"])).unwrap();
    let Err(Error::Tokenizer(msg)) = none.chat_prompt(&[("user", "hi")], true) else {
        panic!("rendered without a template");
    };
    assert!(msg.contains("no tokenizer.chat_template"), "{msg}");
}
