"""An independent numpy forward of a BERT encoder from its safetensors file, for the parity
test (tests/minilm_parity.rs). Reads {"ids": [[...]], "mask": [[...]]} on stdin (token ids
padded with 0, mask 1/0), prints the mean-pooled sentence embeddings as JSON.

Written from the Hugging Face BertModel definition (post-layer-norm encoder, erf GELU,
attention scores / sqrt(head_dim) with masked keys at -inf-like, mean pooling over real
tokens as sentence-transformers does), in float64.

usage: minilm_ref.py <model dir with model.safetensors and config.json>
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def main():
    model_dir = sys.argv[1]
    config = json.load(open(f"{model_dir}/config.json"))
    w = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in w else ""
    g = lambda name: w[prefix + name]
    batch = json.load(sys.stdin)
    ids = np.array(batch["ids"], dtype=np.int64)
    mask = np.array(batch["mask"], dtype=np.float64)
    b, t = ids.shape
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    hd = hidden // heads
    eps = config.get("layer_norm_eps", 1e-12)

    x = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[:t][None] + g("embeddings.token_type_embeddings.weight")[0][None, None]
    x = layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
    lin = lambda x, name: x @ g(f"{name}.weight").T + g(f"{name}.bias")
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}"
        split = lambda y: y.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)
        q, k, v = (split(lin(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        scores = np.where(mask[:, None, None, :] > 0, scores, -1e30)
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, t, hidden)
        x = layer_norm(lin(context, f"{p}.attention.output.dense") + x, g(f"{p}.attention.output.LayerNorm.weight"), g(f"{p}.attention.output.LayerNorm.bias"), eps)
        h = gelu(lin(x, f"{p}.intermediate.dense"))
        x = layer_norm(lin(h, f"{p}.output.dense") + x, g(f"{p}.output.LayerNorm.weight"), g(f"{p}.output.LayerNorm.bias"), eps)
    pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    json.dump({"embeddings": pooled.tolist()}, sys.stdout)


if __name__ == "__main__":
    main()
