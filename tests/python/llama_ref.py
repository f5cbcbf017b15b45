"""An independent numpy forward of a Llama-architecture GGUF model (SmolLM2), for the parity tests
of spectune's Llama forward. Weights are read and dequantized by the `gguf` package (each tensor
once), and all the math is float64.

Written from Hugging Face's LlamaModel: pre-norm RMSNorm blocks, rotate-half RoPE, causal
grouped-query attention scaled by 1/sqrt(head_dim), a SiLU-gated MLP, a final RMSNorm, and the
output projection tied to token_embd when the file has no output.weight.

RoPE convention: llama.cpp's converter permutes the rows of attn_q and attn_k within each head so
that rotary pairs are adjacent (GGUF rows 2j, 2j+1 = HF rows j, j + head_dim/2). This script
undoes that permutation on load and then applies HF's rotate-half RoPE, so it shares the
interleaved convention with neither llama.cpp nor (presumably) the Rust code. Both ways give the
same logits.

Usage: llama_ref.py MODEL.gguf --ids 1,2,3 [--greedy N] [--all-logits]
Prints {"logits": [last position's logits], "argmax": id, "greedy": [N ids]} as JSON, with
"logits" a list of every position's logits under --all-logits.
"""

import argparse
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


class Model:
    def __init__(self, path):
        reader = GGUFReader(path)
        meta = lambda key: reader.fields[key].contents()
        self.dim = int(meta("llama.embedding_length"))
        self.layers = int(meta("llama.block_count"))
        self.heads = int(meta("llama.attention.head_count"))
        self.kv_heads = int(meta("llama.attention.head_count_kv"))
        self.ffn = int(meta("llama.feed_forward_length"))
        self.eps = float(meta("llama.attention.layer_norm_rms_epsilon"))
        self.base = float(meta("llama.rope.freq_base"))
        self.head_dim = self.dim // self.heads
        self.tensors = {t.name: t for t in reader.tensors}
        self.cache = {}

    def w(self, name):
        """A tensor dequantized to float64, numpy order: (rows = out, cols = in) for matrices."""
        if name not in self.cache:
            t = self.tensors[name]
            self.cache[name] = dequantize(t.data, t.tensor_type).astype(np.float64)
        return self.cache[name]

    def checked(self, name, shape):
        x = self.w(name)
        assert x.shape == shape, (name, x.shape, shape)
        return x

    def qk(self, name, n_head):
        """attn_q / attn_k with the converter's row permutation undone (back to HF order).

        The converter did w.reshape(n_head, 2, hd/2, n_in).swapaxes(1, 2): its inverse reads the
        GGUF rows as (n_head, hd/2, 2) and swaps back."""
        key = name + "#hf"
        if key not in self.cache:
            w = self.checked(name, (n_head * self.head_dim, self.dim))
            self.cache[key] = (w.reshape(n_head, self.head_dim // 2, 2, self.dim)
                               .swapaxes(1, 2).reshape(w.shape))
        return self.cache[key]

    def rms_norm(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.checked(name, (self.dim,))

    def rope(self, x):
        """HF rotate-half RoPE on x of shape (heads, T, head_dim): pairs are (i, i + head_dim/2)."""
        t, half = x.shape[1], self.head_dim // 2
        theta = self.base ** (-2.0 * np.arange(half, dtype=np.float64) / self.head_dim)
        angles = np.arange(t, dtype=np.float64)[:, None] * theta[None, :]  # (T, half)
        cos, sin = np.cos(angles), np.sin(angles)
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def attention(self, x, i):
        t, hd = x.shape[0], self.head_dim
        p = f"blk.{i}"
        q = (x @ self.qk(f"{p}.attn_q.weight", self.heads).T).reshape(t, self.heads, hd)
        k = (x @ self.qk(f"{p}.attn_k.weight", self.kv_heads).T).reshape(t, self.kv_heads, hd)
        v = x @ self.checked(f"{p}.attn_v.weight", (self.kv_heads * hd, self.dim)).T
        v = v.reshape(t, self.kv_heads, hd)
        q, k, v = (a.transpose(1, 0, 2) for a in (q, k, v))  # (heads, T, hd)
        q, k = self.rope(q), self.rope(k)
        group = self.heads // self.kv_heads  # query head h reads KV head h // group
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        scores = np.where(np.tril(np.ones((t, t), dtype=bool)), scores, -np.inf)
        scores -= scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(t, self.dim)
        return context @ self.checked(f"{p}.attn_output.weight", (self.dim, self.dim)).T

    def mlp(self, x, i):
        p = f"blk.{i}"
        gate = x @ self.checked(f"{p}.ffn_gate.weight", (self.ffn, self.dim)).T
        up = x @ self.checked(f"{p}.ffn_up.weight", (self.ffn, self.dim)).T
        silu = gate / (1.0 + np.exp(-gate))
        return (silu * up) @ self.checked(f"{p}.ffn_down.weight", (self.dim, self.ffn)).T

    def forward(self, ids):
        """Logits for every position, shape (T, vocab)."""
        embd = self.w("token_embd.weight")
        assert embd.shape[1] == self.dim, embd.shape
        x = embd[np.asarray(ids)]
        for i in range(self.layers):
            x = x + self.attention(self.rms_norm(x, f"blk.{i}.attn_norm.weight"), i)
            x = x + self.mlp(self.rms_norm(x, f"blk.{i}.ffn_norm.weight"), i)
        out = self.w("output.weight") if "output.weight" in self.tensors else embd
        return self.rms_norm(x, "output_norm.weight") @ out.T


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf")
    parser.add_argument("--ids", required=True, help="comma-separated prompt token ids")
    parser.add_argument("--greedy", type=int, default=0, help="ids to generate greedily")
    parser.add_argument("--all-logits", action="store_true", help="logits of every position")
    args = parser.parse_args()
    ids = [int(s) for s in args.ids.split(",") if s.strip()]
    model = Model(args.gguf)
    logits = model.forward(ids)
    last = logits[-1]
    greedy, seq = [], list(ids)
    for _ in range(args.greedy):
        nxt = int(np.argmax(model.forward(seq)[-1]))
        greedy.append(nxt)
        seq.append(nxt)
    json.dump({
        "logits": logits.tolist() if args.all_logits else last.tolist(),
        "argmax": int(np.argmax(last)),
        "greedy": greedy,
    }, sys.stdout)


if __name__ == "__main__":
    main()
