#!/usr/bin/env python3
"""Write GGUF models for docent-eval's preflight tests and estimates.

Three kinds of file:

* a tiny random-weight model llama.cpp can load and run (F16 matrices, F32 norms), with the
  tokenizer (every tokenizer.* key, chat template included) copied from a real GGUF:
      make_gguf.py --arch llama --layers 4 --hidden 128 --heads 8 --kv-heads 2 --ffn 256 \
                   --vocab-from models/SmolLM2-135M-Instruct.Q4_1.gguf --out tiny-llama.gguf
* the same with its tensor data cut in half (valid header, truncated data): --truncate
* a runnable model of a large model's real shapes with random Q4_0 weights (written as random
  quantized blocks, so an 8B-shaped file takes seconds), e.g. for GPU speed checks:
      make_gguf.py --preset bllossom-8b --quant q4_0 --vocab-from models/SmolLM2-135M-Instruct.Q4_1.gguf \
                   --pad-vocab --out bllossom-shaped-q4_0.gguf
* a header-only file with the real shapes of a large model, its tensors declared with the
  types llama.cpp's Q4_K_M (or F16) recipe gives them and no data, for metadata-only estimates:
      make_gguf.py --preset qwen2.5-14b --quant q4_k_m --metadata-only --out qwen14b.gguf

Needs the `gguf` and `numpy` packages (`make pydeps`).
"""

import argparse
import sys

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFValueType as V
except ImportError:  # pragma: no cover - message for a missing dependency
    sys.exit("make_gguf.py needs the gguf and numpy packages: run `make pydeps` (pip install gguf numpy)")

# Real shapes (the models' config.json).
PRESETS = {
    # llama-3-Korean-Bllossom-8B = Llama-3-8B.
    "bllossom-8b": dict(arch="llama", name="llama-3-Korean-Bllossom-8B (shape only)", layers=32,
                        hidden=4096, ffn=14336, heads=32, kv_heads=8, vocab=128256, ctx=8192,
                        rope_theta=500000.0, merges=280147, tied=False),
    "qwen2.5-14b": dict(arch="qwen2", name="Qwen2.5-14B-Instruct (shape only)", layers=48,
                        hidden=5120, ffn=13824, heads=40, kv_heads=8, vocab=152064, ctx=32768,
                        rope_theta=1000000.0, merges=151387, tied=False),
    "qwen2.5-32b": dict(arch="qwen2", name="Qwen2.5-32B-Instruct (shape only)", layers=64,
                        hidden=5120, ffn=27648, heads=40, kv_heads=8, vocab=152064, ctx=32768,
                        rope_theta=1000000.0, merges=151387, tied=False),
}

FILE_TYPE = {"f16": 1, "q4_0": 2, "q4_k_m": 15}
# Token type llama.cpp gives tokens no text maps to (--pad-vocab).
TOKEN_UNUSED = 5


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama-quant.cpp: the layers Q4_K_M gives Q6_K for attn_v and ffn_down."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def tensor_type(name: str, layer: int, n_layer: int, quant: str, ndim: int) -> T:
    """The ggml type llama.cpp's recipe gives a tensor (dense llama/qwen2 models)."""
    if ndim == 1:
        return T.F32
    if quant == "f16":
        return T.F16
    if quant == "q4_0":
        return T.Q4_0
    if name == "output.weight":
        return T.Q6_K
    if name.endswith("attn_v.weight") or name.endswith("ffn_down.weight"):
        return T.Q6_K if use_more_bits(layer, n_layer) else T.Q4_K
    return T.Q4_K


def tensor_shapes(arch: str, layers: int, hidden: int, ffn: int, heads: int, kv_heads: int,
                  vocab: int, tied: bool):
    """(name, numpy-order shape, layer) of every tensor of a dense llama/qwen2 model."""
    head_dim = hidden // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    out = [("token_embd.weight", (vocab, hidden), -1)]
    for i in range(layers):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", (hidden,), i),
            (p + "attn_q.weight", (q, hidden), i),
            (p + "attn_k.weight", (kv, hidden), i),
            (p + "attn_v.weight", (kv, hidden), i),
        ]
        if arch == "qwen2":
            out += [(p + "attn_q.bias", (q,), i), (p + "attn_k.bias", (kv,), i),
                    (p + "attn_v.bias", (kv,), i)]
        out += [
            (p + "attn_output.weight", (hidden, q), i),
            (p + "ffn_norm.weight", (hidden,), i),
            (p + "ffn_gate.weight", (ffn, hidden), i),
            (p + "ffn_up.weight", (ffn, hidden), i),
            (p + "ffn_down.weight", (hidden, ffn), i),
        ]
    out.append(("output_norm.weight", (hidden,), -1))
    if not tied:
        out.append(("output.weight", (vocab, hidden), -1))
    return out


def nbytes(shape, ggml_type: T) -> int:
    block, size = gguf.GGML_QUANT_SIZES[ggml_type]
    n = int(np.prod(shape))
    if shape[-1] % block:
        raise SystemExit(f"row of {shape[-1]} is not a multiple of the {ggml_type.name} block {block}")
    return n // block * size


def random_q4_0(rng, shape, std: float = 0.02) -> np.ndarray:
    """Random Q4_0 blocks for a (rows, cols) matrix, as the raw bytes GGUF stores: per block of 32
    weights an f16 scale then 16 bytes of 4-bit values (weight = scale * (q - 8)). Uniform q has a
    standard deviation of about 4.6, so the scale gives weights of about `std`."""
    rows, cols = shape
    blocks = cols // 32
    data = rng.integers(0, 256, size=(rows, blocks, 18), dtype=np.uint8)
    data[:, :, 0:2] = np.frombuffer(np.float16(std / 4.6).tobytes(), np.uint8)
    return data.reshape(rows, blocks * 18)


def copy_tokenizer(writer: "gguf.GGUFWriter", source: str, pad_to: int = 0) -> int:
    """Copy every tokenizer.* key of `source`, appending unused tokens up to `pad_to` (so a model
    of another vocabulary's size can borrow it); returns the vocabulary size."""
    reader = gguf.GGUFReader(source)
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = field.types[0]
        if main == V.ARRAY:
            sub = field.types[-1]
            if sub == V.STRING:
                values = [bytes(field.parts[i]) for i in field.data]
            else:
                values = [field.parts[i].tolist()[0] for i in field.data]
            if key == "tokenizer.ggml.tokens":
                values += [f"<|unused_{i}|>".encode() for i in range(len(values), pad_to)]
                vocab = len(values)
            elif key == "tokenizer.ggml.token_type":
                values += [TOKEN_UNUSED] * max(0, pad_to - len(values))
            elif key == "tokenizer.ggml.scores":
                values += [0.0] * max(0, pad_to - len(values))
            writer.add_key_value(key, values, V.ARRAY, sub_type=sub)
        elif main == V.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]), V.STRING)
        else:
            writer.add_key_value(key, field.parts[field.data[0]].tolist()[0], main)
    if vocab == 0:
        raise SystemExit(f"{source} has no tokenizer.ggml.tokens")
    return vocab


def synthetic_tokenizer(writer: "gguf.GGUFWriter", vocab: int, merges: int) -> None:
    """A BPE tokenizer of the real size (token and merge counts) for header-only files."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([f"tok{i}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"m{i} x" for i in range(merges)])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="GGUF file to write")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="real shapes of a large model")
    ap.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2, help="fewer than --heads: grouped-query attention")
    ap.add_argument("--ffn", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=4096, help="trained context length")
    ap.add_argument("--vocab-from", help="real GGUF whose tokenizer.* keys are copied")
    ap.add_argument("--vocab", type=int, default=0, help="vocabulary size (header-only files without --vocab-from)")
    ap.add_argument("--merges", type=int, default=0, help="BPE merges (header-only files without --vocab-from)")
    ap.add_argument("--tied", action="store_true", help="no output.weight: the output reuses token_embd")
    ap.add_argument("--quant", choices=sorted(FILE_TYPE), default="f16",
                    help="tensor types: f16, q4_0 (random quantized blocks), or llama.cpp's Q4_K_M "
                         "recipe (header-only files only)")
    ap.add_argument("--pad-vocab", action="store_true",
                    help="with --preset and --vocab-from: pad the borrowed tokenizer with unused "
                         "tokens to the preset's vocabulary size")
    ap.add_argument("--metadata-only", action="store_true", help="declare the tensors, write no data")
    ap.add_argument("--truncate", action="store_true", help="cut the tensor data in half (a broken file)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    name = f"tiny-{a.arch}"
    rope_theta, tied, merges = 10000.0, a.tied, a.merges
    if a.preset:
        p = PRESETS[a.preset]
        a.arch, name, a.layers, a.hidden, a.ffn = p["arch"], p["name"], p["layers"], p["hidden"], p["ffn"]
        a.heads, a.kv_heads, a.ctx, rope_theta = p["heads"], p["kv_heads"], p["ctx"], p["rope_theta"]
        tied = p["tied"]
        a.vocab = a.vocab or p["vocab"]
        merges = merges or p["merges"]
    if a.quant == "q4_k_m" and not a.metadata_only:
        sys.exit("--quant q4_k_m is for --metadata-only files; runnable models are f16 or q4_0")
    if a.hidden % a.heads or a.heads % a.kv_heads:
        sys.exit("--hidden must be a multiple of --heads, and --heads of --kv-heads")

    writer = gguf.GGUFWriter(a.out, a.arch)
    writer.add_name(name)
    writer.add_file_type(FILE_TYPE[a.quant])
    writer.add_context_length(a.ctx)
    writer.add_embedding_length(a.hidden)
    writer.add_block_count(a.layers)
    writer.add_feed_forward_length(a.ffn)
    writer.add_head_count(a.heads)
    writer.add_head_count_kv(a.kv_heads)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(rope_theta)
    writer.add_rope_dimension_count(a.hidden // a.heads)
    if a.vocab_from:
        vocab = copy_tokenizer(writer, a.vocab_from, a.vocab if a.pad_vocab else 0)
    elif a.metadata_only and a.vocab:
        vocab = a.vocab
        synthetic_tokenizer(writer, vocab, merges)
    else:
        sys.exit("pass --vocab-from REAL.gguf (runnable models need a real tokenizer)")
    writer.add_vocab_size(vocab)

    rng = np.random.default_rng(a.seed)
    shapes = tensor_shapes(a.arch, a.layers, a.hidden, a.ffn, a.heads, a.kv_heads, vocab, tied)
    for tname, shape, layer in shapes:
        ttype = tensor_type(tname, layer, a.layers, a.quant, len(shape))
        if a.metadata_only:
            writer.add_tensor_info(tname, shape, np.dtype(np.float32), nbytes(shape, ttype), raw_dtype=ttype)
        elif len(shape) == 1:
            values = np.ones(shape, np.float32) if tname.endswith("norm.weight") else np.zeros(shape, np.float32)
            writer.add_tensor(tname, values)
        elif ttype == T.Q4_0:
            writer.add_tensor(tname, random_q4_0(rng, shape), raw_dtype=T.Q4_0)
        else:
            writer.add_tensor(tname, (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float16))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if a.metadata_only:
        writer.write_ti_data_to_file()
        writer.close()
        declared = sum(nbytes(s, tensor_type(n, l, a.layers, a.quant, len(s))) for n, s, l in shapes)
        print(f"{a.out}: header only, {len(shapes)} tensors declared, {declared} bytes of {a.quant} data")
        return
    writer.write_tensors_to_file()
    writer.close()
    if a.truncate:
        with open(a.out, "r+b") as f:
            f.seek(0, 2)
            size = f.tell()
            data = sum(nbytes(s, tensor_type(n, l, a.layers, a.quant, len(s))) for n, s, l in shapes)
            f.truncate(size - data // 2)
        print(f"{a.out}: truncated to {size - data // 2} of {size} bytes")
    else:
        print(f"{a.out}: {len(shapes)} tensors, vocabulary {vocab}")


if __name__ == "__main__":
    main()
