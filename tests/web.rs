//! Browser tests: the wasm build running matmul through WebGPU in headless Chromium.
//! Run with `cargo test --target wasm32-unknown-unknown --test web` (scripts/test.sh does).
#![cfg(target_arch = "wasm32")]

use spectune::linalg::{self, Gemm};
use spectune::reference::{self, assert_close, Rng};
use spectune::{Error, Gpu, Step, Tensor};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// The browser's GPU; built with CI=true, a missing adapter fails the test instead of skipping.
async fn gpu() -> Option<Gpu> {
    match Gpu::request().await {
        Ok(gpu) => Some(gpu),
        Err(e) if option_env!("CI") == Some("true") => {
            panic!("CI=true but the browser gave no WebGPU adapter: {e}")
        }
        Err(e) => {
            web_sys::console::log_1(&format!("skipping browser GPU test: {e}").into());
            None
        }
    }
}

/// A plain JS object from key-value pairs (the options the JS API takes).
fn object(pairs: &[(&str, wasm_bindgen::JsValue)]) -> wasm_bindgen::JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        js_sys::Reflect::set(&o, &(*k).into(), v).unwrap();
    }
    o.into()
}

/// The message of the JS `Error` a call rejected with.
fn message(e: wasm_bindgen::JsValue) -> String {
    js_sys::Error::from(e).message().as_string().unwrap()
}

#[wasm_bindgen_test]
async fn matmul_in_the_browser_matches_reference() {
    let Some(gpu) = gpu().await else { return };
    let mut rng = Rng::new(3);
    for (m, n, k, ta, tb) in [
        (1, 1, 1, false, false),
        (17, 33, 65, false, false),
        (17, 33, 65, true, true),
        (64, 3, 130, false, true),
    ] {
        let (ha, hb) = (rng.vec_f32(m * k), rng.vec_f32(k * n));
        let a = Tensor::from_slice(&gpu, &if ta { [k, m] } else { [m, k] }, &ha).unwrap();
        let b = Tensor::from_slice(&gpu, &if tb { [n, k] } else { [k, n] }, &hb).unwrap();
        let c = Tensor::zeros(&gpu, &[m, n]).unwrap();
        let mut step = Step::new(&gpu, "browser");
        linalg::gemm(
            &mut step,
            &Gemm::default().trans_a(ta).trans_b(tb),
            &a,
            &b,
            &c,
        )
        .unwrap();
        step.submit().unwrap();
        let got = c.to_vec(&gpu).await.unwrap();
        let want = reference::gemm(1, m, n, k, 1.0, &ha, ta, false, &hb, tb, false, 0.0, &[]);
        // Same tolerance as the native tests: f32 accumulation over k terms.
        assert_close(
            &format!("browser gemm {m}x{n}x{k}"),
            &got,
            &want,
            1e-5 * (k as f64).sqrt(),
            1e-5,
        );
    }
}

#[wasm_bindgen_test]
async fn js_api_matmul_and_errors() {
    use spectune::web::JsGpu;
    if gpu().await.is_none() {
        return;
    }
    let gpu = JsGpu::request(None).await.unwrap();
    let a = gpu.tensor(&[1., 2., 3., 4., 5., 6.], vec![2, 3]).unwrap();
    let b = gpu.tensor(&[1., 1., 1.], vec![3, 1]).unwrap();
    let c = gpu.matmul(&a, &b).unwrap();
    assert_eq!(c.shape(), vec![2, 1]);
    let values = wasm_bindgen_futures::JsFuture::from(c.read())
        .await
        .unwrap();
    assert_eq!(js_sys::Float32Array::from(values).to_vec(), vec![6., 15.]);

    // A shape mismatch is a JS Error naming the problem, not a panic.
    let err = gpu.matmul(&a, &a).err().expect("2x3 · 2x3 must be refused");
    let msg = js_sys::Error::from(err).message().as_string().unwrap();
    assert!(msg.contains("inner dimensions differ"), "{msg}");
    let err = gpu
        .tensor(&[1., 2., 3.], vec![2, 2])
        .err()
        .expect("3 values for a 2x2 tensor must be refused");
    assert!(js_sys::Error::from(err)
        .message()
        .as_string()
        .unwrap()
        .contains("do not fill shape"));
}

#[wasm_bindgen_test]
async fn lost_device_is_an_error() {
    let Some(gpu) = gpu().await else { return };
    gpu.destroy();
    assert!(matches!(
        Tensor::zeros(&gpu, &[4]),
        Err(Error::DeviceLost(_))
    ));
}

#[wasm_bindgen_test]
async fn svd_in_the_browser_matches_faer() {
    use spectune::linalg::{svd_truncated, SvdMethod, SvdOptions};
    use spectune::reference::{matrix_with_spectrum, svd_accuracy};
    let Some(gpu) = gpu().await else { return };
    let (m, n, r) = (96, 64, 8);
    let sigma: Vec<f64> = (0..64).map(|i| 0.8f64.powi(i)).collect();
    let w = matrix_with_spectrum(m, n, &sigma, 1);
    let t = Tensor::from_slice(&gpu, &[m, n], &w).unwrap();
    // Both methods: the exact one (faer in wasm) and the GPU's converged iteration.
    for method in [SvdMethod::Exact, SvdMethod::Iterative] {
        let opts = SvdOptions {
            method,
            ..SvdOptions::default()
        };
        let svd = svd_truncated(&gpu, &t, r, &opts).await.unwrap();
        let (u, v) = (
            svd.u.to_vec(&gpu).await.unwrap(),
            svd.v.to_vec(&gpu).await.unwrap(),
        );
        let acc = svd_accuracy(m, n, &w, &u, &svd.s, &v);
        // Same bounds as the native tests for a spectrum with gaps.
        assert!(
            svd.report.converged
                && svd.report.method == method
                && acc.sigma_rel_err <= 1e-4
                && acc.angle_u <= 1e-3
                && acc.angle_v <= 1e-3
                && acc.residual_ratio <= 1.001,
            "{method:?}: {acc:?} {:?}",
            svd.report
        );
    }
}

#[wasm_bindgen_test]
async fn js_api_svd_and_its_errors() {
    use spectune::web::JsGpu;
    use wasm_bindgen::{JsCast, JsValue};
    if gpu().await.is_none() {
        return;
    }
    let gpu = JsGpu::request(None).await.unwrap();
    let values: Vec<f32> = (0..12 * 8)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let w = gpu.tensor(&values, vec![12, 8]).unwrap();
    let promise: js_sys::Promise = gpu.svd(&w, 3, None).unchecked_into();
    let result = wasm_bindgen_futures::JsFuture::from(promise).await.unwrap();
    let s =
        js_sys::Float32Array::from(js_sys::Reflect::get(&result, &"s".into()).unwrap()).to_vec();
    assert_eq!(s.len(), 3);
    assert!(s[0] >= s[1] && s[1] >= s[2] && s[2] > 0.0, "{s:?}");
    // The report: the method that ran and a residual and angle bound per vector.
    let report = js_sys::Reflect::get(&result, &"report".into()).unwrap();
    let field = |k: &str| js_sys::Reflect::get(&report, &k.into()).unwrap();
    assert_eq!(field("method").as_string().as_deref(), Some("exact"));
    assert_eq!(field("converged").as_bool(), Some(true));
    assert_eq!(js_sys::Float32Array::from(field("angleBounds")).length(), 3);
    // Options: the GPU's iteration on request, and an unknown method named.
    let options = |json: &str| -> JsValue { js_sys::JSON::parse(json).unwrap() };
    let promise: js_sys::Promise = gpu
        .svd(
            &w,
            3,
            Some(options(r#"{"method": "iterative", "maxIters": 40}"#).unchecked_into()),
        )
        .unchecked_into();
    let iterative = wasm_bindgen_futures::JsFuture::from(promise).await.unwrap();
    let report = js_sys::Reflect::get(&iterative, &"report".into()).unwrap();
    assert_eq!(
        js_sys::Reflect::get(&report, &"method".into())
            .unwrap()
            .as_string()
            .as_deref(),
        Some("iterative")
    );
    let promise: js_sys::Promise = gpu
        .svd(
            &w,
            3,
            Some(options(r#"{"method": "lanczos"}"#).unchecked_into()),
        )
        .unchecked_into();
    let err = wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .unwrap_err();
    let msg = js_sys::Error::from(err).message().as_string().unwrap();
    assert!(msg.contains("lanczos") && msg.contains("exact"), "{msg}");
    let wide = gpu.tensor(&values, vec![8, 12]).unwrap();
    let (first, second) = (JsValue::from(w.clone()), JsValue::from(wide));
    let list = js_sys::Array::of2(&first, &second);
    let batch: js_sys::Promise = gpu.svd_batch(list, 2, None).unwrap().unchecked_into();
    let batch = js_sys::Array::from(&wasm_bindgen_futures::JsFuture::from(batch).await.unwrap());
    assert_eq!(batch.length(), 2);
    // The caller's tensors are still theirs.
    use wasm_bindgen::convert::TryFromJsValue;
    assert_eq!(
        spectune::web::JsTensor::try_from_js_value(first)
            .expect("still a live Tensor")
            .shape(),
        vec![12, 8]
    );
    let not_tensors = js_sys::Array::of1(&JsValue::from(3));
    assert!(
        gpu.svd_batch(not_tensors, 2, None).is_err(),
        "a number is not a Tensor"
    );

    let bad: js_sys::Promise = gpu.svd(&w, 9, None).unchecked_into();
    let err = wasm_bindgen_futures::JsFuture::from(bad)
        .await
        .expect_err("rank 9 of a 12×8 matrix must be refused");
    let msg = js_sys::Error::from(err).message().as_string().unwrap();
    assert!(
        msg.contains("rank 9") && msg.contains("between 1 and 8"),
        "{msg}"
    );
}

/// `LanguageModel` through the JS API on a generated decoder: an adapter, training steps that
/// lower the loss, streamed generation, and errors for bad bytes and training without an adapter.
#[wasm_bindgen_test]
async fn js_api_language_model_trains_and_generates() {
    use spectune::web::{JsGpu, JsLanguageModel};
    use wasm_bindgen::{closure::Closure, JsCast};
    use wasm_bindgen_futures::JsFuture;
    if gpu().await.is_none() {
        return;
    }
    let gpu = JsGpu::request(None).await.unwrap();

    let err = JsLanguageModel::load(&gpu, b"GGUF but not really")
        .err()
        .unwrap();
    assert!(message(err).contains("GGUF"));

    let sizes = object(&[
        ("vocabSize", 64.into()),
        ("hiddenSize", 32.into()),
        ("layers", 2.into()),
        ("heads", 4.into()),
        ("kvHeads", 2.into()),
        ("intermediateSize", 64.into()),
        ("contextLength", 32.into()),
    ]);
    let model = JsLanguageModel::random(&gpu, sizes.unchecked_into(), 1).unwrap();
    assert_eq!(model.vocab_size().unwrap(), 64);
    let tokens: Vec<u32> = (0..2 * 9).map(|i| (i * 7 % 64) as u32).collect();
    let err = JsFuture::from(model.train_step(tokens.clone(), 2, 1e-2))
        .await
        .unwrap_err();
    assert!(message(err).contains("add an adapter"));

    let targets = js_sys::Array::of2(&"attn_q".into(), &"attn_v".into());
    let options = object(&[
        ("kind", "spectral-additive".into()),
        ("rank", 2.into()),
        ("targets", targets.into()),
    ]);
    let count = JsFuture::from(model.add_adapter(options.unchecked_into()))
        .await
        .unwrap();
    assert_eq!(
        count.as_f64(),
        Some((2 * 2 * (32 + 32) + 2 * 2 * (16 + 32)) as f64)
    );
    let mut losses = Vec::new();
    for _ in 0..4 {
        let loss = JsFuture::from(model.train_step(tokens.clone(), 2, 1e-2))
            .await
            .unwrap();
        losses.push(loss.as_f64().unwrap());
    }
    assert!(losses[3] < losses[0], "{losses:?}");

    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = seen.clone();
    let on_token = Closure::<dyn FnMut(u32) -> bool>::new(move |t: u32| {
        sink.borrow_mut().push(t);
        true
    });
    let out = JsFuture::from(
        model.generate(
            vec![1, 2, 3],
            5,
            0.0,
            1.0,
            0,
            vec![],
            Some(
                on_token
                    .as_ref()
                    .unchecked_ref::<js_sys::Function>()
                    .clone(),
            ),
        ),
    )
    .await
    .unwrap();
    let out = js_sys::Uint32Array::from(out).to_vec();
    assert_eq!(out.len(), 5);
    assert_eq!(*seen.borrow(), out);
}

/// The JS `Model` and `Trainer` on a generated two-layer BERT and a small WordPiece vocabulary
/// (no downloaded assets): bad bytes and missing options are errors; training through `fit`
/// reports progress and lowers the loss; an AbortSignal cancels between steps; an adapter
/// file loads back to the same predictions; two adapters on disjoint bands fuse; the merged
/// model saves, with its head, and loads back; the PEFT export is made; a Trainer made for an
/// earlier adapter refuses.
#[wasm_bindgen_test]
async fn js_api_model_trains_saves_fuses_and_exports() {
    use spectune::model::bert::{Bert, BertConfig};
    use spectune::web::{JsModel, JsTrainer};
    use wasm_bindgen::{closure::Closure, JsCast, JsValue};
    use wasm_bindgen_futures::JsFuture;
    let Some(native) = gpu().await else { return };
    let get = |o: &JsValue, k: &str| js_sys::Reflect::get(o, &k.into()).unwrap();

    // The model files a user would have: weights, config.json and tokenizer.json.
    const WORDS: [&str; 10] = [
        "the", "movie", "was", "very", "great", "good", "fun", "awful", "bad", "boring",
    ];
    let tokenizer = spectune::reference::tokenizer::wordpiece_json(&WORDS);
    let config = BertConfig {
        vocab_size: 4 + WORDS.len(),
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    let config_json = format!(
        r#"{{"vocab_size": {}, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12}}"#,
        config.vocab_size
    );
    let weights = Bert::random(&native, config, 7)
        .unwrap()
        .merged_safetensors(&native)
        .await
        .unwrap();
    let options = || {
        object(&[
            ("config", config_json.as_str().into()),
            ("tokenizer", tokenizer.as_str().into()),
            ("seed", 1.into()),
        ])
    };
    let native = std::rc::Rc::new(native);
    let load = |bytes: &[u8], options: JsValue| {
        let (gpu, bytes) = (native.clone(), bytes.to_vec());
        async move { JsModel::open(gpu, &bytes, &options).await }
    };

    // Bad input: named errors.
    let err = load(b"not a model", options())
        .await
        .err()
        .expect("bad bytes");
    assert!(message(err).contains("BERT weights"));
    let err = load(&weights, object(&[])).await.err().expect("no config");
    assert!(message(err).contains("options.config"), "config missing");
    let model = load(&weights, options()).await.unwrap();
    assert_eq!(model.arch().unwrap(), "bert");
    assert!(JsValue::from(model.adapter().unwrap()).is_null());
    assert!(
        message(JsTrainer::new(&model, None).err().expect("no adapter yet"))
            .contains("add an adapter")
    );

    let adapter = |band: u32| {
        let targets = js_sys::Array::of2(&"query".into(), &"value".into());
        object(&[
            ("kind", "spectral-additive".into()),
            ("rank", 2.into()),
            ("band", band.into()),
            ("targets", targets.into()),
        ])
    };
    let summary = JsFuture::from(model.add_adapter(adapter(0).unchecked_into()))
        .await
        .unwrap();
    assert_eq!(get(&summary, "layers").as_f64(), Some(4.0));
    assert_eq!(
        get(&summary, "trainable").as_f64(),
        Some(4.0 * 2.0 * (32.0 + 32.0))
    );
    // What the SVD reached, per target: band 0 has no edge above, and one below.
    let spectrum = js_sys::Array::from(&get(&summary, "spectrum"));
    assert_eq!(spectrum.length(), 4);
    let band = spectrum.get(0);
    assert_eq!(get(&band, "method").as_string().as_deref(), Some("exact"));
    assert_eq!(get(&band, "converged").as_bool(), Some(true));
    assert!(get(&band, "gapAbove").is_null());
    assert!(get(&band, "gapBelow").as_f64().is_some_and(|g| g >= 1.0));
    assert!(get(&band, "edgeInCluster").as_bool().is_some());

    let examples = js_sys::Array::new();
    for (text, label) in [
        ("the movie was great", 1),
        ("very good fun", 1),
        ("great great movie", 1),
        ("good movie", 1),
        ("the movie was awful", 0),
        ("very bad", 0),
        ("boring bad movie", 0),
        ("awful", 0),
    ] {
        examples.push(&object(&[("text", text.into()), ("label", label.into())]));
    }
    let examples = JsValue::from(examples);
    let evaluate =
        |model: &JsModel| JsFuture::from(model.evaluate(examples.clone().unchecked_into(), None));
    let before = evaluate(&model).await.unwrap();
    let loss_before = get(&before, "loss").as_f64().unwrap();

    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let sink = seen.clone();
    let on_progress = Closure::<dyn FnMut(JsValue)>::new(move |p: JsValue| {
        let loss = js_sys::Reflect::get(&p, &"loss".into()).unwrap();
        sink.borrow_mut().push(loss.as_f64().unwrap());
    });
    let trainer_options = object(&[
        ("lr", 0.02.into()),
        ("batchSize", 4.into()),
        ("epochs", 6.into()),
        ("onProgress", on_progress.as_ref().clone()),
    ]);
    let trainer = JsTrainer::new(&model, Some(trainer_options.unchecked_into())).unwrap();
    let report = JsFuture::from(trainer.fit(examples.clone().unchecked_into(), None))
        .await
        .unwrap();
    assert_eq!(get(&report, "steps").as_f64(), Some(12.0));
    assert_eq!(get(&report, "cancelled").as_bool(), Some(false));
    assert_eq!(seen.borrow().len(), 12, "one progress call per step");
    let after = evaluate(&model).await.unwrap();
    let loss_after = get(&after, "loss").as_f64().unwrap();
    assert!(loss_after < loss_before, "{loss_before} → {loss_after}");

    // A call that would overlap a running fit is refused, not interleaved.
    let one_epoch = object(&[("epochs", 1.into())]);
    let running = JsFuture::from(trainer.fit(
        examples.clone().unchecked_into(),
        Some(one_epoch.unchecked_into()),
    ));
    let clash = JsFuture::from(model.add_adapter(adapter(0).unchecked_into()))
        .await
        .unwrap_err();
    assert!(message(clash).contains("busy"));
    let report = running.await.unwrap();
    assert_eq!(get(&report, "steps").as_f64(), Some(2.0));

    // An AbortSignal stops between steps.
    let controller = js_sys::eval("new AbortController()").unwrap();
    let abort = js_sys::Function::from(get(&controller, "abort"));
    abort.call0(&controller).unwrap();
    let fit_options = object(&[("signal", get(&controller, "signal"))]);
    let report = JsFuture::from(trainer.fit(
        examples.clone().unchecked_into(),
        Some(fit_options.unchecked_into()),
    ))
    .await
    .unwrap();
    assert_eq!(get(&report, "cancelled").as_bool(), Some(true));
    assert_eq!(get(&report, "steps").as_f64(), Some(0.0));

    // The adapter file gives back the same predictions, head included.
    let texts = vec!["good fun movie".to_string(), "awful boring".to_string()];
    let predict = |model: &JsModel| {
        let model_predict = JsFuture::from(model.predict(texts.clone()));
        async move {
            let out = js_sys::Array::from(&model_predict.await.unwrap());
            out.iter()
                .flat_map(|p| js_sys::Float32Array::from(p).to_vec())
                .collect::<Vec<f32>>()
        }
    };
    let trained = predict(&model).await;
    assert!((trained[0] + trained[1] - 1.0).abs() < 1e-5, "{trained:?}");
    let file_a = js_sys::Uint8Array::from(JsFuture::from(model.save_adapter()).await.unwrap());
    let peft = JsFuture::from(model.export_peft()).await.unwrap();
    assert!(get(&peft, "config").as_string().unwrap().contains("\"r\""));
    assert!(js_sys::Uint8Array::from(get(&peft, "weights")).length() > 0);

    JsFuture::from(model.add_adapter(adapter(1).unchecked_into()))
        .await
        .unwrap();
    let stale = JsFuture::from(trainer.fit(examples.clone().unchecked_into(), None))
        .await
        .unwrap_err();
    assert!(message(stale).contains("adapter changed"));
    let trainer_b = JsTrainer::new(
        &model,
        Some(object(&[("lr", 0.02.into()), ("batchSize", 4.into())]).unchecked_into()),
    )
    .unwrap();
    JsFuture::from(trainer_b.fit(examples.clone().unchecked_into(), None))
        .await
        .unwrap();
    let file_b = js_sys::Uint8Array::from(JsFuture::from(model.save_adapter()).await.unwrap());

    JsFuture::from(model.load_adapter(file_a.clone()))
        .await
        .unwrap();
    let reloaded = predict(&model).await;
    for (a, b) in trained.iter().zip(&reloaded) {
        assert!((a - b).abs() < 1e-5, "{trained:?} vs {reloaded:?}");
    }
    let err = JsFuture::from(model.load_adapter(js_sys::Uint8Array::from(&b"junk"[..])))
        .await
        .unwrap_err();
    assert!(!message(err).is_empty());

    // Two adapters on disjoint bands fuse into the weights; the merged model saves and loads.
    JsFuture::from(model.fuse(vec![file_a, file_b], "mean".into()))
        .await
        .unwrap();
    assert!(JsValue::from(model.adapter().unwrap()).is_null());
    let fused = predict(&model).await;
    let merged = js_sys::Uint8Array::from(JsFuture::from(model.save()).await.unwrap()).to_vec();
    let file = spectune::io::safetensors::read("merged", &merged).unwrap();
    assert!(file.get("classifier.weight").is_some() && file.get("classifier.bias").is_some());
    let again = load(&merged, options()).await.unwrap();
    let reloaded = predict(&again).await;
    for (a, b) in fused.iter().zip(&reloaded) {
        assert!(
            (a - b).abs() < 1e-5,
            "fused {fused:?} vs saved and loaded {reloaded:?}"
        );
    }
    assert!((fused[0] + fused[1] - 1.0).abs() < 1e-5, "{fused:?}");

    // The fused adapters are kept: one comes out again without a reload, and fused back in,
    // the predictions are the two-adapter ones again.
    assert_eq!(model.fused().unwrap().length(), 2);
    let taken = js_sys::Uint8Array::from(JsFuture::from(model.unfuse(1)).await.unwrap());
    assert_eq!(model.fused().unwrap().length(), 1);
    let one = predict(&model).await;
    assert!(
        one.iter().zip(&fused).any(|(a, b)| (a - b).abs() > 1e-6),
        "taking an adapter out changed nothing: {one:?}"
    );
    JsFuture::from(model.fuse(vec![taken], "mean".into()))
        .await
        .unwrap();
    let refused = predict(&model).await;
    for (a, b) in fused.iter().zip(&refused) {
        assert!(
            (a - b).abs() < 1e-5,
            "{fused:?} vs unfused and fused again {refused:?}"
        );
    }
    let err = JsFuture::from(model.unfuse(7)).await.unwrap_err();
    assert!(message(err).contains("no fused adapter 7"));

    // The spectrum of one fused layer: its singular values, largest first, and both bands.
    let target = "encoder.layer.0.attention.self.query".to_string();
    let spectrum = JsFuture::from(model.spectrum(target)).await.unwrap();
    let sigma = js_sys::Float32Array::from(get(&spectrum, "sigma")).to_vec();
    assert_eq!(sigma.len(), 32);
    assert!(sigma.windows(2).all(|w| w[0] >= w[1]), "{sigma:?}");
    let bands = js_sys::Array::from(&get(&spectrum, "bands"));
    assert_eq!(bands.length(), 2);
    let second = bands.get(1);
    assert_eq!(get(&second, "fused").as_f64(), Some(1.0));
    assert_eq!(
        (get(&second, "start").as_f64(), get(&second, "end").as_f64()),
        (Some(2.0), Some(4.0))
    );
    assert!(get(&second, "change").as_f64().is_some_and(|c| c > 0.0));
    let err = JsFuture::from(model.spectrum("nope".into()))
        .await
        .unwrap_err();
    assert!(message(err).contains("nope"));
}

/// A browser without WebGPU: `Gpu.request()` rejects with an Error that says so (simulated by
/// hiding `navigator.gpu` for the duration of the call, then putting it back).
#[wasm_bindgen_test]
async fn missing_webgpu_is_a_clear_error() {
    use spectune::web::JsGpu;
    use wasm_bindgen::JsValue;
    let prototype = js_sys::eval("Object.getPrototypeOf(navigator)").unwrap();
    let key = JsValue::from_str("gpu");
    let descriptor =
        js_sys::Reflect::get_own_property_descriptor(&prototype.clone().into(), &key).unwrap();
    if descriptor.is_undefined() {
        return; // this browser has no WebGPU to hide
    }
    js_sys::Reflect::delete_property(&prototype.clone().into(), &key).unwrap();
    let result = JsGpu::request(None).await;
    js_sys::Reflect::define_property(&prototype.into(), &key, &descriptor.into()).unwrap();
    let message = js_sys::Error::from(result.err().expect("no WebGPU, no Gpu"))
        .message()
        .as_string()
        .unwrap();
    assert!(message.contains("WebGPU"), "{message}");
    assert!(JsGpu::request(None).await.is_ok(), "navigator.gpu is back");
}

/// `Gpu.request(options)`: a low-power adapter is still an adapter; a misspelt preference is an
/// Error naming the option and its values, before WebGPU is asked.
#[wasm_bindgen_test]
async fn gpu_request_options_are_read_and_checked() {
    use spectune::web::JsGpu;
    use wasm_bindgen::JsCast;
    let options = |js: &str| Some(js_sys::eval(js).unwrap().unchecked_into());
    assert!(
        JsGpu::request(options("({ powerPreference: 'low-power' })"))
            .await
            .is_ok()
    );
    let result = JsGpu::request(options("({ powerPreference: 'fastest' })")).await;
    let message = js_sys::Error::from(result.err().expect("a bad option is refused"))
        .message()
        .as_string()
        .unwrap();
    assert!(
        message.contains("powerPreference") && message.contains("low-power"),
        "{message}"
    );
}
