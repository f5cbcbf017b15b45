"""Hugging Face's `tokenizers` on the texts of examples/bench_tokenizer.rs, timed the same way:
the median of REPEATS runs after a warm-up, for each case. Prints "case seconds" lines.

usage: tokenizer_ref.py MINILM_TOKENIZER_JSON SMOLLM2_GGUF TEXTS_JSON REPEATS
(run with TOKENIZERS_PARALLELISM=false to compare one thread with one thread)
"""

import json
import os
import statistics
import sys
import time

from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from bpe_ref import hf_tokenizer, read_gguf  # noqa: E402  SmolLM2's tokenizer, as the tests build it


def median_seconds(f, repeats):
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    wordpiece = Tokenizer.from_file(sys.argv[1])
    wordpiece.no_padding()
    wordpiece.no_truncation()
    tokens, merges, types, _ = read_gguf(sys.argv[2])
    bpe = hf_tokenizer(tokens, merges, types)
    texts = json.load(open(sys.argv[3]))
    repeats = int(sys.argv[4])
    joined = " ".join(texts)
    cases = {
        "wordpiece_sentences": lambda: [wordpiece.encode(t) for t in texts],
        "wordpiece_joined": lambda: wordpiece.encode(joined),
        "bpe_sentences": lambda: [bpe.encode(t, add_special_tokens=False) for t in texts],
        "bpe_joined": lambda: bpe.encode(joined, add_special_tokens=False),
    }
    for name, f in cases.items():
        print(name, median_seconds(f, repeats))


if __name__ == "__main__":
    main()
