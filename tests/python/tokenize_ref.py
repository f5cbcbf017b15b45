"""The reference for tests/tokenizer.rs: Hugging Face's own tokenizers (PyPI `tokenizers`) encodes
a batch the way spectune::io::tokenizer promises to.

usage: tokenize_ref.py TOKENIZER_JSON [MAX_LEN] < texts.json
Reads a JSON list of texts on stdin and prints {"ids", "attention_mask", "token_type_ids"}, each a
list of rows. Without MAX_LEN the file's padding and truncation are replaced by padding to the
longest text; with MAX_LEN, texts are truncated to MAX_LEN tokens (special tokens included) and
padded to exactly MAX_LEN.
"""

import json
import sys

from tokenizers import Tokenizer


def main() -> None:
    tokenizer = Tokenizer.from_file(sys.argv[1])
    texts = json.load(sys.stdin)
    pad = tokenizer.padding  # the file's settings, read before they are replaced
    pad_id = pad["pad_id"] if pad else tokenizer.token_to_id("[PAD]")
    pad_token = pad["pad_token"] if pad else "[PAD]"
    pad_type_id = pad["pad_type_id"] if pad else 0
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if len(sys.argv) > 2:
        max_len = int(sys.argv[2])
        tokenizer.enable_truncation(max_length=max_len)
        tokenizer.enable_padding(pad_id=pad_id, pad_type_id=pad_type_id, pad_token=pad_token, length=max_len)
    else:
        tokenizer.enable_padding(pad_id=pad_id, pad_type_id=pad_type_id, pad_token=pad_token)
    rows = tokenizer.encode_batch(texts)
    json.dump(
        {
            "ids": [r.ids for r in rows],
            "attention_mask": [r.attention_mask for r in rows],
            "token_type_ids": [r.type_ids for r in rows],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
