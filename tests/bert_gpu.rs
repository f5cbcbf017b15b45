//! The BERT encoder's forward pass on a generated 2-layer, width-64 model against an f64
//! reference composed from `reference::layers`, with padding, and with an adapter attached.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use common::{block_on, gpu};
use spectune::adapter::{AdapterConfig, AdapterKind};
use spectune::model::bert::{Bert, BertConfig, TokenBatch};
use spectune::reference::assert_close;
use spectune::reference::layers::{
    attention, embeddings, gelu, layer_norm, mean_pool, AttentionDims,
};
use spectune::{Gpu, Step, Tensor};

fn read(gpu: &Gpu, t: &Tensor) -> Vec<f64> {
    block_on(t.to_vec(gpu))
        .unwrap()
        .iter()
        .map(|&v| v as f64)
        .collect()
}

fn config() -> BertConfig {
    BertConfig {
        vocab_size: 50,
        hidden_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 128,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    }
}

/// y = x Wᵀ + b in f64 for x (rows × n), W (m × n).
fn linear(x: &[f64], w: &[f64], b: &[f64], m: usize, n: usize) -> Vec<f64> {
    let rows = x.len() / n;
    (0..rows * m)
        .map(|idx| {
            b[idx % m]
                + (0..n)
                    .map(|k| x[(idx / m) * n + k] * w[(idx % m) * n + k])
                    .sum::<f64>()
        })
        .collect()
}

/// The encoder in f64 from the GPU model's weights (W' = the merged weight where adapted).
fn reference(gpu: &Gpu, bert: &Bert, tokens: &TokenBatch) -> Vec<f64> {
    let c = bert.config;
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let eps = c.layer_norm_eps as f64;
    let weight = |l: &spectune::model::linear::Linear| -> Vec<f64> {
        match bert.adapter().and_then(|a| a.find(&l.name)) {
            Some(a) => {
                let mut step = Step::new(gpu, "merge");
                let w = a.merged_weight(&mut step).unwrap();
                step.submit().unwrap();
                read(gpu, &w)
            }
            None => read(gpu, l.weight.dense().unwrap()),
        }
    };
    let lin = |x: &[f64], l: &spectune::model::linear::Linear| {
        linear(
            x,
            &weight(l),
            &read(gpu, l.bias.as_ref().unwrap()),
            l.out_features(),
            l.in_features(),
        )
    };
    let mask: Vec<f64> = tokens.mask.iter().map(|&m| m as f64).collect();
    let emb = embeddings(
        &read(gpu, &bert.word),
        &read(gpu, &bert.position),
        &read(gpu, &bert.token_type),
        h,
        tokens.seq,
        &tokens.ids,
        &tokens.type_ids,
    );
    let mut x = layer_norm(
        &emb,
        h,
        &read(gpu, &bert.embedding_norm.gamma),
        &read(gpu, &bert.embedding_norm.beta),
        eps,
    );
    let dims = AttentionDims {
        batch: tokens.batch,
        seq: tokens.seq,
        heads: c.num_attention_heads,
        head_dim: h / c.num_attention_heads,
    };
    for layer in &bert.layers {
        let (q, k, v) = (
            lin(&x, &layer.query),
            lin(&x, &layer.key),
            lin(&x, &layer.value),
        );
        let (context, _) = attention(dims, &q, &k, &v, &mask);
        let attended = lin(&context, &layer.attention_output);
        let sum: Vec<f64> = attended.iter().zip(&x).map(|(a, b)| a + b).collect();
        let normed = layer_norm(
            &sum,
            h,
            &read(gpu, &layer.attention_norm.gamma),
            &read(gpu, &layer.attention_norm.beta),
            eps,
        );
        let act: Vec<f64> = lin(&normed, &layer.intermediate)
            .into_iter()
            .map(gelu)
            .collect();
        assert_eq!(act.len(), tokens.batch * tokens.seq * i);
        let out = lin(&act, &layer.output);
        let sum: Vec<f64> = out.iter().zip(&normed).map(|(a, b)| a + b).collect();
        x = layer_norm(
            &sum,
            h,
            &read(gpu, &layer.output_norm.gamma),
            &read(gpu, &layer.output_norm.beta),
            eps,
        );
    }
    mean_pool(&x, &mask, tokens.batch, tokens.seq, h)
}

fn tokens() -> TokenBatch {
    // Two sentences of 7 and 4 tokens, the second padded (mask 0, pad id 0).
    let ids = vec![1, 9, 17, 3, 44, 12, 2, 1, 30, 5, 2, 0, 0, 0];
    let mask = vec![1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0.];
    TokenBatch {
        ids,
        type_ids: vec![0; 14],
        mask,
        batch: 2,
        seq: 7,
    }
}

/// Sentence embeddings against the f64 reference. Tolerance 1e-4 abs / 1e-3 rel: two layers of
/// f32 products of width 64–128 and three layer norms (each divides by a standard deviation).
#[test]
fn encoder_forward_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    let mut bert = Bert::random(gpu, config(), 7).unwrap();
    let t = tokens();
    for adapted in [false, true] {
        if adapted {
            block_on(bert.add_adapter(
                gpu,
                AdapterConfig::new(AdapterKind::SpectralAdditive, 4),
                &["query", "value"],
            ))
            .unwrap();
            let a = bert.adapter().unwrap();
            for (i, v) in block_on(a.params().read_values(gpu))
                .unwrap()
                .iter()
                .enumerate()
            {
                a.params()
                    .write(
                        gpu,
                        i,
                        &v.iter()
                            .enumerate()
                            .map(|(j, _)| 0.05 * ((j * 7 + i) % 11) as f32 - 0.25)
                            .collect::<Vec<_>>(),
                    )
                    .unwrap();
            }
        }
        let mut step = Step::new(gpu, "encode");
        let (pooled, _) = bert.encode(&mut step, &t).unwrap();
        step.submit().unwrap();
        assert_eq!(pooled.shape(), &[2, 64]);
        let got: Vec<f32> = block_on(pooled.to_vec(gpu)).unwrap();
        assert_close(
            &format!("pooled embeddings (adapter: {adapted})"),
            &got,
            &reference(gpu, &bert, &t),
            1e-4,
            1e-3,
        );
    }
}

#[test]
fn bad_configs_and_weights_are_named_errors() {
    let Some(gpu) = gpu() else { return };
    assert!(BertConfig::from_json(r#"{"vocab_size": 5}"#).is_err());
    let text = r#"{"vocab_size": 50, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 128, "max_position_embeddings": 16, "type_vocab_size": 2}"#;
    assert!(BertConfig::from_json(text)
        .unwrap_err()
        .to_string()
        .contains("multiple"));
    let file = spectune::io::safetensors::SafetensorsFile::default();
    let err = Bert::from_safetensors(gpu, &file, config()).unwrap_err();
    assert!(
        matches!(err, spectune::Error::MissingTensor { ref name, .. } if name.ends_with(".weight")),
        "{err}"
    );
}

/// (name, W or None when adapted, bias, m, n)
type RefLinear = (String, Option<Vec<f64>>, Vec<f64>, usize, usize);

/// The encoder's frozen weights in f64, and how to rebuild each adapted W' from parameters.
struct Reference {
    config: BertConfig,
    word: Vec<f64>,
    position: Vec<f64>,
    token_type: Vec<f64>,
    norms: Vec<(Vec<f64>, Vec<f64>)>,
    linears: Vec<RefLinear>,
    /// name → (frozen part, index of its first tensor among the adapter's)
    adapted: Vec<(String, spectune::reference::adapter::FrozenRef, usize)>,
}

impl Reference {
    fn new(gpu: &Gpu, bert: &Bert) -> Reference {
        let adapter = bert.adapter().unwrap();
        let mut adapted = Vec::new();
        let mut first = 0;
        for l in adapter.layers() {
            let b = l.basis.as_ref().unwrap();
            adapted.push((
                l.name.clone(),
                spectune::reference::adapter::FrozenRef {
                    m: l.m,
                    n: l.n,
                    r: l.rank,
                    base: read(gpu, l.base.dense().unwrap()),
                    u: read(gpu, &b.u),
                    s: read(gpu, &b.s),
                    v: read(gpu, &b.v),
                },
                first,
            ));
            first += 2;
        }
        let mut norms = vec![(
            read(gpu, &bert.embedding_norm.gamma),
            read(gpu, &bert.embedding_norm.beta),
        )];
        for l in &bert.layers {
            norms.push((
                read(gpu, &l.attention_norm.gamma),
                read(gpu, &l.attention_norm.beta),
            ));
            norms.push((
                read(gpu, &l.output_norm.gamma),
                read(gpu, &l.output_norm.beta),
            ));
        }
        let linears = bert
            .linears()
            .map(|l| {
                (
                    l.name.clone(),
                    adapter
                        .find(&l.name)
                        .is_none()
                        .then(|| read(gpu, l.weight.dense().unwrap())),
                    read(gpu, l.bias.as_ref().unwrap()),
                    l.out_features(),
                    l.in_features(),
                )
            })
            .collect();
        Reference {
            config: bert.config,
            word: read(gpu, &bert.word),
            position: read(gpu, &bert.position),
            token_type: read(gpu, &bert.token_type),
            norms,
            linears,
            adapted,
        }
    }

    /// Σ d_pooled ⊙ pooled(params) in f64.
    fn loss(&self, params: &[Vec<f64>], tokens: &TokenBatch, d_pooled: &[f64]) -> f64 {
        let c = self.config;
        let (h, eps) = (c.hidden_size, c.layer_norm_eps as f64);
        let lin = |x: &[f64], k: usize| {
            let (name, w, b, m, n) = &self.linears[k];
            let w = w.clone().unwrap_or_else(|| {
                let (_, frozen, first) = self.adapted.iter().find(|(a, _, _)| a == name).unwrap();
                spectune::reference::adapter::adapted_weight(
                    frozen,
                    spectune::reference::adapter::KindRef::Additive,
                    &params[*first..first + 2],
                )
            });
            linear(x, &w, b, *m, *n)
        };
        let mask: Vec<f64> = tokens.mask.iter().map(|&m| m as f64).collect();
        let emb = embeddings(
            &self.word,
            &self.position,
            &self.token_type,
            h,
            tokens.seq,
            &tokens.ids,
            &tokens.type_ids,
        );
        let mut x = layer_norm(&emb, h, &self.norms[0].0, &self.norms[0].1, eps);
        let dims = AttentionDims {
            batch: tokens.batch,
            seq: tokens.seq,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
        };
        for l in 0..c.num_hidden_layers {
            let (q, k, v) = (lin(&x, 6 * l), lin(&x, 6 * l + 1), lin(&x, 6 * l + 2));
            let (context, _) = attention(dims, &q, &k, &v, &mask);
            let sum: Vec<f64> = lin(&context, 6 * l + 3)
                .iter()
                .zip(&x)
                .map(|(a, b)| a + b)
                .collect();
            let (g, b) = &self.norms[1 + 2 * l];
            let normed = layer_norm(&sum, h, g, b, eps);
            let act: Vec<f64> = lin(&normed, 6 * l + 4).into_iter().map(gelu).collect();
            let sum: Vec<f64> = lin(&act, 6 * l + 5)
                .iter()
                .zip(&normed)
                .map(|(a, b)| a + b)
                .collect();
            let (g, b) = &self.norms[2 + 2 * l];
            x = layer_norm(&sum, h, g, b, eps);
        }
        mean_pool(&x, &mask, tokens.batch, tokens.seq, h)
            .iter()
            .zip(d_pooled)
            .map(|(a, b)| a * b)
            .sum()
    }
}

/// The gradient of the whole encoder with spectral A on query and value of both layers,
/// against central differences (h = 1e-4) of the f64 encoder, on 24 sampled entries of every
/// adapter tensor. Tolerance atol 2e-4 / rtol 2e-3: twice STYLE.md's, for the f32 backward
/// through two attention softmaxes and four layer norms.
#[test]
fn encoder_gradients_match_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut bert = Bert::random(gpu, config(), 8).unwrap();
    block_on(bert.add_adapter(
        gpu,
        AdapterConfig::new(AdapterKind::SpectralAdditive, 2),
        &["query", "value"],
    ))
    .unwrap();
    let adapter = bert.adapter().unwrap();
    let mut rng = spectune::reference::Rng::new(9);
    for (i, v) in block_on(adapter.params().read_values(gpu))
        .unwrap()
        .iter()
        .enumerate()
    {
        adapter
            .params()
            .write(
                gpu,
                i,
                &v.iter()
                    .map(|_| 0.2 * rng.normal() as f32)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
    }
    let t = tokens();
    let d_pooled: Vec<f32> = rng.vec_f32(2 * 64);
    let d_t = Tensor::from_slice(gpu, &[2, 64], &d_pooled).unwrap();
    let mut step = Step::new(gpu, "encoder grads");
    let (_, saved) = bert.encode(&mut step, &t).unwrap();
    bert.backward(&mut step, &saved, &d_t).unwrap();
    step.submit().unwrap();

    let reference = Reference::new(gpu, &bert);
    let params: Vec<Vec<f64>> = block_on(adapter.params().read_values(gpu))
        .unwrap()
        .iter()
        .map(|v| v.iter().map(|&x| x as f64).collect())
        .collect();
    let grads = block_on(adapter.params().read_grads(gpu)).unwrap();
    let d64: Vec<f64> = d_pooled.iter().map(|&v| v as f64).collect();
    let h = 1e-4;
    for (i, name) in adapter.params().names().enumerate() {
        let picks: Vec<usize> = (0..24)
            .map(|_| (rng.next_u64() % params[i].len() as u64) as usize)
            .collect();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for &j in &picks {
            let mut at = params.clone();
            at[i][j] += h;
            let plus = reference.loss(&at, &t, &d64);
            at[i][j] -= 2.0 * h;
            let minus = reference.loss(&at, &t, &d64);
            want.push((plus - minus) / (2.0 * h));
            got.push(grads[i][j]);
        }
        assert_close(&format!("∂{name}"), &got, &want, 2e-4, 2e-3);
    }
}
