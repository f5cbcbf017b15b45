"""The reference for spectune::io::bpe (tests/bpe_tokenizer.rs), from the same GGUF read by the
`gguf` package, two ways:

- "hf": Hugging Face's `tokenizers`, loading a tokenizer.json laid out as SmolLM2's own: no
  normalizer, Digits(individual_digits) then ByteLevel (no prefix space, GPT-2 regex), a BPE
  model without unk token or byte fallback, the control tokens as special added tokens, a
  ByteLevel decoder. Only the vocabulary, merges and token types come from the GGUF.
- "plain": a byte-level BPE written here from scratch (GPT-2's byte alphabet, llama.cpp's
  "smollm" split: every \\p{N} alone, then GPT-2's regex, via the `regex` package; merges by
  rank), sharing no code with `tokenizers`.

The chat prompts are rendered by jinja2 from tokenizer.chat_template the way transformers'
apply_chat_template does (sandboxed, trim_blocks, lstrip_blocks).

Usage: bpe_ref.py MODEL.gguf < {"texts": [...], "chats": [{"messages": [[role, content], ...],
"add_generation_prompt": bool}, ...]}
Prints {"hf": [ids...], "plain": [ids...], "decoded": [text...], "chats": [text...],
"chat_ids": [ids...]} as JSON.
"""

import json
import sys

import regex
from gguf import GGUFReader
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

CONTROL = 3
GPT2_SPLIT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


def strings(field):
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def read_gguf(path):
    fields = GGUFReader(path).fields
    tokens = strings(fields["tokenizer.ggml.tokens"])
    merges = strings(fields["tokenizer.ggml.merges"])
    types = [int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in
             fields["tokenizer.ggml.token_type"].data]
    template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode("utf-8")
    pre = bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode("utf-8")
    assert pre == "smollm", pre
    return tokens, merges, types, template


def hf_tokenizer(tokens, merges, types):
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types)) if ty == CONTROL
    ]
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True},
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ") for m in merges]},
    }
    return Tokenizer.from_str(json.dumps(spec))


def byte_alphabet():
    """GPT-2's bytes_to_unicode: printable bytes as themselves, the rest from U+0100 on."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, shifted = {}, 0x100
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(shifted)
            shifted += 1
    return table


class PlainBpe:
    def __init__(self, tokens, merges, types):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.alphabet = byte_alphabet()
        specials = sorted((t for t, ty in zip(tokens, types) if ty == CONTROL), key=len,
                          reverse=True)
        self.special_split = regex.compile("(" + "|".join(map(regex.escape, specials)) + ")")
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        # A byte with no token (SmolLM2 has none for 0xf1, which starts U+40000..) is dropped,
        # as the library does when the model has no unknown token.
        parts = [c for c in word if c in self.ids]
        while len(parts) > 1:
            pairs = [(self.ranks.get(p, 1 << 40), i) for i, p in enumerate(zip(parts, parts[1:]))]
            rank, _ = min(pairs)
            if rank == 1 << 40:
                break
            best = next(p for p in zip(parts, parts[1:]) if self.ranks.get(p) == rank)
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.ids[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for k, fragment in enumerate(self.special_split.split(text)):
            if k % 2 == 1:
                ids.append(self.ids[fragment])
                continue
            for piece in regex.split(r"(\p{N})", fragment):
                for word in GPT2_SPLIT.findall(piece):
                    mapped = "".join(self.alphabet[b] for b in word.encode("utf-8"))
                    ids.extend(self.bpe(mapped))
        return ids


def main():
    tokens, merges, types, template = read_gguf(sys.argv[1])
    request = json.load(sys.stdin)
    hf = hf_tokenizer(tokens, merges, types)
    plain = PlainBpe(tokens, merges, types)
    texts = request.get("texts", [])
    hf_ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=True)]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    compiled = env.from_string(template)
    chats = [
        compiled.render(
            messages=[{"role": r, "content": c} for r, c in chat["messages"]],
            add_generation_prompt=chat["add_generation_prompt"],
        )
        for chat in request.get("chats", [])
    ]
    json.dump({
        "hf": hf_ids,
        "plain": [plain.encode(t) for t in texts],
        "decoded": [hf.decode(ids, skip_special_tokens=False) for ids in hf_ids],
        "chats": chats,
        "chat_ids": [e.ids for e in hf.encode_batch(chats, add_special_tokens=True)],
    }, sys.stdout)


if __name__ == "__main__":
    main()
