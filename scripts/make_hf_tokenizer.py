#!/usr/bin/env python3
"""Write a Hugging Face tokenizer.json from a GGUF file's BPE vocabulary, for the tokenizer-check
tests (docs/tokenizer-check.md) without downloading the original model's tokenizer.

    make_hf_tokenizer.py --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf --out tokenizer.json
    make_hf_tokenizer.py --gguf ... --break pre-tokenizer --out broken.json
    make_hf_tokenizer.py --gguf ... --break merges --out broken.json

The tokens (tokenizer.ggml.tokens, in byte-level form such as "Ġthe"), the merges
(tokenizer.ggml.merges) and the control tokens are copied; the pre-tokenizer is the one llama.cpp
applies for the GGUF's tokenizer.ggml.pre (src/llama-vocab.cpp), written as the original models'
tokenizer.json files write it. Such a file should tokenize text exactly as llama.cpp does with
the GGUF. The broken variants are the two known ways a conversion goes wrong:

* pre-tokenizer: GPT-2's plain ByteLevel split, without the rule that splits digits one by one
  (a wrong tokenizer.ggml.pre, llama.cpp #7724);
* merges: every other merge dropped (an incomplete merges list, llama.cpp #7476).

Needs the `gguf` package (`make pydeps`).
"""

import argparse
import json
import sys

try:
    import gguf
except ImportError:  # pragma: no cover - message for a missing dependency
    sys.exit("make_hf_tokenizer.py needs the gguf package: run `make pydeps` (pip install gguf numpy)")

# llama.cpp's regex for LLAMA_VOCAB_PRE_TYPE_LLAMA3 as the original tokenizer.json writes it.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Token type of control tokens (<|im_start|>, <|endoftext|>) in tokenizer.ggml.token_type.
CONTROL = 3
USER_DEFINED = 4


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def pre_tokenizer(pre):
    """The pre-tokenizer of tokenizer.json for llama.cpp's tokenizer.ggml.pre."""
    if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"):
        # "\p{N}" (each digit alone), then GPT-2's split.
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level(True)]}
    if pre in ("gpt-2", "gpt2", "mpt", "olmo", "jais"):
        return byte_level(True)
    if pre in ("llama3", "llama-v3", "llama-bpe"):
        return {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            byte_level(False)]}
    sys.exit(f"make_hf_tokenizer.py: no pre-tokenizer known for tokenizer.ggml.pre = {pre!r}")


def field(reader, key):
    found = reader.fields.get(key)
    if found is None:
        return None
    if found.types and found.types[0] == gguf.GGUFValueType.ARRAY:
        return [found.contents(i) for i in range(len(found.data))]
    return found.contents()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", required=True, help="GGUF file with a BPE (gpt2) vocabulary")
    parser.add_argument("--out", required=True, help="tokenizer.json to write")
    parser.add_argument("--break", dest="broken", choices=["pre-tokenizer", "merges"],
                        help="write a broken variant")
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.gguf)
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        sys.exit("make_hf_tokenizer.py: only BPE (tokenizer.ggml.model = gpt2) vocabularies are supported")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = field(reader, "tokenizer.ggml.merges")
    pre = field(reader, "tokenizer.ggml.pre") or "gpt-2"

    pre_tok = pre_tokenizer(pre)
    if args.broken == "pre-tokenizer":
        pre_tok = byte_level(True)
    if args.broken == "merges":
        merges = merges[::2]
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": kind == CONTROL}
        for i, (t, kind) in enumerate(zip(tokens, types)) if kind in (CONTROL, USER_DEFINED)
    ]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tok,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "ignore_merges": pre in ("llama3", "llama-v3", "llama-bpe"),
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(tokenizer, out, ensure_ascii=False)


if __name__ == "__main__":
    main()
