"""The true spectrum of a real model's projections, for the spectrum tests of spectune's SVD.

For every target of a spectune adapter file, the base weight is read independently of spectune
(safetensors for BERT; the `gguf` package's reader and dequantizer for GGUF, with attn_q/attn_k's
llama.cpp row permutation undone as Hugging Face does), decomposed whole by numpy's LAPACK SVD in
float64, and compared with the band's basis the file stores: per vector, the relative error of σ
and the angles of u and v to the true ones; per band, the largest principal angle of span(U₁)
(which stays small inside a cluster even where single vectors are not defined) and the true gaps
at the band's edges.

Usage: spectrum_ref.py MODEL (model.safetensors or .gguf) ADAPTER.safetensors
Prints {"targets": [{"name", "sigma_rel_err": [..], "angle_u": [..], "angle_v": [..],
"subspace_u", "subspace_v", "gap_above", "gap_below", "neighbour_gap": [..]}]} as JSON.
"""

import json
import struct
import sys

import numpy as np
from safetensors.numpy import load_file


def adapter(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    return json.loads(meta["spectune"]), load_file(path)


def weights(path):
    """name -> float64 (out, in) matrix getter."""
    if path.endswith(".gguf"):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        reader = GGUFReader(path)
        arch = reader.fields["general.architecture"].contents()
        heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
        kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
        tensors = {t.name: t for t in reader.tensors}

        def get(name):
            t = tensors[name + ".weight"]
            w = dequantize(t.data, t.tensor_type).astype(np.float64)
            h = {"attn_q": heads, "attn_k": kv_heads}.get(name.split(".")[-1])
            if h:  # GGUF rows (head, hd/2, 2) back to HF's (head, 2, hd/2)
                rows, cols = w.shape
                w = w.reshape(h, rows // h // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
            return w

        return get
    tensors = load_file(path)
    return lambda name: tensors[name + ".weight"].astype(np.float64)


def angles(got, true):
    """Per column: the angle between got[:, j] and the unit true[:, j], sign-blind, as
    asin of the part of got orthogonal to true (arccos of a cosine near 1 loses half the
    digits)."""
    got = got / np.linalg.norm(got, axis=0)
    off = got - true * np.sum(got * true, axis=0)
    return np.arcsin(np.clip(np.linalg.norm(off, axis=0), 0.0, 1.0))


def subspace_angle(got, true):
    """Largest principal angle between span(got) and span(true), true orthonormal:
    asin ‖(I − true trueᵀ) got‖₂ over got's orthonormalised columns."""
    q, _ = np.linalg.qr(got)
    off = q - true @ (true.T @ q)
    return float(np.arcsin(min(np.linalg.norm(off, 2), 1.0)))


def main():
    model, adapter_path = sys.argv[1], sys.argv[2]
    config, tensors = adapter(adapter_path)
    get = weights(model)
    r, start = config["rank"], config["band"] * config["rank"]
    out = []
    for t in config["targets"]:
        name = t["name"]
        w = get(name)
        assert list(w.shape) == t["shape"], (name, w.shape, t["shape"])
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        end = start + r
        u_true, s_true, v_true = u[:, start:end], s[start:end], vt[start:end].T
        u_got = tensors[name + ".u"].astype(np.float64)
        s_got = tensors[name + ".s"].astype(np.float64)
        v_got = tensors[name + ".v"].astype(np.float64)
        # Each vector's relative gap to its nearest neighbour in the true spectrum.
        neighbour = [
            float(min(abs(s[j] - s[i]) for i in (j - 1, j + 1) if 0 <= i < len(s)) / s[j])
            for j in range(start, end)
        ]
        out.append({
            "name": name,
            "sigma_rel_err": (np.abs(s_got - s_true) / s_true).tolist(),
            "angle_u": angles(u_got, u_true).tolist(),
            "angle_v": angles(v_got, v_true).tolist(),
            "subspace_u": subspace_angle(u_got, u_true),
            "subspace_v": subspace_angle(v_got, v_true),
            "gap_above": float(s[start - 1] / s[start]) if start > 0 else None,
            "gap_below": float(s[end - 1] / s[end]) if end < len(s) else None,
            "neighbour_gap": neighbour,
        })
    json.dump({"targets": out}, sys.stdout)


if __name__ == "__main__":
    main()
