"""The GGUF reader's reference (tests/gguf.rs): writes a GGUF with the `gguf` package's GGUFWriter
(metadata of every value type, nested arrays, tensors of F32, F16, Q8_0, Q4_1 and one Q4_0 that
spectune lists but does not dequantize) and prints what a reader must find, as JSON.

Usage: gguf_ref.py OUT.gguf [ALIGNMENT]

Floats are printed as their bit patterns (f32 as u32, f64 as u64), so the comparison is exact and
no decimal parsing can round them; byte strings are printed as hex.
"""

import json
import struct
import sys

import numpy as np
from gguf import GGUFValueType as VT, GGUFWriter, GGMLQuantizationType as QT, GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32",
    VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "string", VT.ARRAY: "array",
    VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64",
}


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def f64_bits(x):
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def scalar(value, vtype):
    if vtype == VT.FLOAT32:
        return f32_bits(value)
    if vtype == VT.FLOAT64:
        return f64_bits(value)
    return value


def item_type(items):
    # GGUFWriter's rule for an array without an explicit item type (and for nested arrays).
    return VT.get_type(items[0])


def array_json(items, itype):
    if itype == VT.ARRAY:
        values = [array_json(inner, item_type(inner)) for inner in items]
    else:
        values = [scalar(v, itype) for v in items]
    return {"items": NAMES[itype], "values": values}


def main():
    path = sys.argv[1]
    alignment = int(sys.argv[2]) if len(sys.argv) > 2 else None
    writer = GGUFWriter(path, "llama")
    expected = [["general.architecture", {"type": "string", "value": "llama"}]]
    if alignment is not None:
        writer.add_custom_alignment(alignment)
        expected.append(["general.alignment", {"type": "u32", "value": alignment}])

    def add(key, value, vtype, sub_type=None):
        writer.add_key_value(key, value, vtype, sub_type)
        if vtype == VT.ARRAY:
            itype = sub_type if sub_type is not None else item_type(value)
            entry = {"type": "array", **array_json(value, itype)}
        else:
            entry = {"type": NAMES[vtype], "value": scalar(value, vtype)}
        expected.append([key, entry])

    add("test.u8", 255, VT.UINT8)
    add("test.i8", -128, VT.INT8)
    add("test.u16", 65535, VT.UINT16)
    add("test.i16", -32768, VT.INT16)
    add("test.u32", 4294967295, VT.UINT32)
    add("test.i32", -2147483648, VT.INT32)
    add("test.f32", 0.1, VT.FLOAT32)
    add("test.bool.true", True, VT.BOOL)
    add("test.bool.false", False, VT.BOOL)
    add("test.string", "héllo, wörld ✓ 🦙\n\"quoted\"", VT.STRING)
    add("test.string.empty", "", VT.STRING)
    add("test.u64", 2**64 - 1, VT.UINT64)
    add("test.i64", -(2**63), VT.INT64)
    add("test.f64", -1.2345678901234567e300, VT.FLOAT64)
    add("test.array.u8", [0, 1, 255], VT.ARRAY, VT.UINT8)
    add("test.array.i8", [-128, 0, 127], VT.ARRAY, VT.INT8)
    add("test.array.u16", [0, 65535], VT.ARRAY, VT.UINT16)
    add("test.array.i16", [-32768, 32767], VT.ARRAY, VT.INT16)
    add("test.array.u32", [7], VT.ARRAY, VT.UINT32)
    add("test.array.i32", [-1, 0, 1, 2147483647], VT.ARRAY, VT.INT32)
    add("test.array.f32", [0.5, -3.25, 1e-30, 3.4e38], VT.ARRAY, VT.FLOAT32)
    add("test.array.bool", [True, False, True], VT.ARRAY, VT.BOOL)
    add("test.array.u64", [0, 2**64 - 1], VT.ARRAY, VT.UINT64)
    add("test.array.i64", [-(2**63), 2**63 - 1], VT.ARRAY, VT.INT64)
    add("test.array.f64", [1.0 / 3.0, -0.0], VT.ARRAY, VT.FLOAT64)
    add("test.array.nested", [[1, 2, 3], [4], [-5, 6]], VT.ARRAY, VT.ARRAY)
    add("test.array.nested.strings", [["a", "b"], ["ć"]], VT.ARRAY, VT.ARRAY)
    add("test.array.nested.deeper", [[[1.5], [2.5, 3.5]], [[4.5]]], VT.ARRAY, VT.ARRAY)
    # What a Llama loader reads (DESIGN.md §5).
    add("llama.block_count", 30, VT.UINT32)
    add("llama.embedding_length", 576, VT.UINT32)
    add("llama.rope.freq_base", 100000.0, VT.FLOAT32)
    add("llama.attention.layer_norm_rms_epsilon", 1e-5, VT.FLOAT32)
    add("tokenizer.ggml.model", "gpt2", VT.STRING)
    add("tokenizer.ggml.tokens", ["<|im_start|>", "Ġthe", "", " ", "ĊĊ", "日本", "\u00ff"], VT.ARRAY)
    add("tokenizer.ggml.token_type", [3, 1, 1, 1, 1, 1, 1], VT.ARRAY, VT.INT32)
    add("tokenizer.ggml.merges", ["Ġ t", "h e", "Ġt he"], VT.ARRAY)
    add("tokenizer.ggml.bos_token_id", 1, VT.UINT32)
    add("tokenizer.chat_template",
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% endfor %}", VT.STRING)

    rng = np.random.default_rng(20240611)
    tensors = []

    def add_tensor(name, values, qtype):
        values = values.astype(np.float32)
        if qtype == QT.F16:
            data = values.astype(np.float16)
            writer.add_tensor(name, data)
        elif qtype == QT.F32:
            data = values
            writer.add_tensor(name, data)
        else:
            data = quantize(values, qtype)
            writer.add_tensor(name, data, raw_dtype=qtype)
        raw = data.tobytes()
        entry = {
            "name": name,
            "ggml_type": int(qtype),
            "shape": list(values.shape),
            "bytes": raw.hex(),
        }
        if qtype in (QT.F32, QT.F16, QT.Q8_0, QT.Q4_1):
            deq = dequantize(data, qtype).astype(np.float32)
            assert deq.shape == values.shape, (deq.shape, values.shape)
            entry["values"] = deq.ravel().view(np.uint32).tolist()
        tensors.append(entry)

    add_tensor("norm.weight", rng.standard_normal(7), QT.F32)
    add_tensor("f16.weight", rng.standard_normal((5, 3)) * 100, QT.F16)
    add_tensor("q8.weight", rng.standard_normal((3, 64)), QT.Q8_0)
    add_tensor("q8.vector", rng.standard_normal(96) * 1e-3, QT.Q8_0)
    add_tensor("q4.weight", rng.standard_normal((3, 64)), QT.Q4_1)
    add_tensor("q4.vector", rng.standard_normal(32) * 50, QT.Q4_1)
    add_tensor("q4.cube", rng.standard_normal((2, 3, 32)), QT.Q4_1)
    # Blocks with equal values (d = 0) and a block of zeros, in both block formats.
    flat = np.concatenate([np.full(32, 0.75), np.zeros(32), np.linspace(-1, 1, 32)]).reshape(3, 32)
    add_tensor("q4.flat", flat, QT.Q4_1)
    add_tensor("q8.flat", flat, QT.Q8_0)
    add_tensor("q4_0.weight", rng.standard_normal((2, 32)), QT.Q4_0)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    sizes = {str(int(t)): list(GGML_QUANT_SIZES[t]) for t in QT if t in GGML_QUANT_SIZES}
    json.dump({"metadata": expected, "tensors": tensors, "quant_sizes": sizes,
               "alignment": alignment or 32}, sys.stdout)


if __name__ == "__main__":
    main()
