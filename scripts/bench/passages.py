#!/usr/bin/env python3
"""`make bench-passages`: generation on a reading-comprehension set whose passages repeat
(questions/passages_sample.jsonl: 4 passages, 3 questions each, KorQuAD-style short answers,
after the ~300-token docent system prompt of `make bench`: the prefix all prompts share),
with docent-eval's prefix tree, with only the prefix all prompts share, with no prefix cache, and
llama-server with its prompt cache (`cache_prompt`, the slot whose cache is most similar) on the
same rendered prompts.

Every engine generates exactly --max-tokens tokens per question (end-of-sequence ignored) at
--parallel N. Times: docent-eval's decode loop (its log line), llama-server's first request to
last response (started cold, not counted). Prompt tokens computed: docent-eval's
prompt_tokens - prompt_tokens_reused per answer plus the shared prefixes it computed once (its
log line), llama-server's timings.prompt_n. Measurements are interleaved, the engines' order
rotated every repetition, and the median of --reps is reported. Writes bench/passages.md.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared runners of `make bench`)

ROOT = bench.ROOT
ENGINES = ["docent-eval, prefix tree", "docent-eval, global prefix only", "docent-eval, no prefix cache",
           "llama-server, prompt cache"]
FLAGS = {ENGINES[0]: ["--prefix-cache", "tree"], ENGINES[1]: ["--prefix-cache", "global"],
         ENGINES[2]: ["--prefix-cache", "off"]}


def log(message):
    print(f"[bench-passages {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def docent(args, workload, engine, db):
    """Decode-loop seconds and prompt tokens computed."""
    if db.exists():
        db.unlink()
    seconds = bench.run_docent(args, workload, args.parallel, db, extra=FLAGS[engine])
    out = subprocess.run(["sqlite3", str(db), "select sum(prompt_tokens), sum(prompt_tokens_reused) from answers"],
                         check=True, capture_output=True, text=True).stdout.strip().split("|")
    sent, reused = int(out[0]), int(out[1] or 0)
    prefix = bench.docent_prefix_built.pop(-1) if bench.docent_prefix_built else 0
    return seconds, sent - reused + prefix


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--questions", default=str(ROOT / "questions" / "passages_sample.jsonl"))
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "passages.md"))
    args = ap.parse_args()
    args.questions_n = sum(1 for line in open(args.questions, encoding="utf-8") if line.strip())
    system_file = ROOT / "scripts" / "bench" / "docent-system-prompt.txt"
    prompts = bench.rendered_prompts(args, system_file)
    lengths = [p["prompt_tokens"] for p in prompts]
    workload = {"name": "passages", "system_file": system_file, "prompts": prompts,
                "max_prompt_tokens": max(lengths), "prompt_tokens_total": sum(lengths)}
    log(f"{len(prompts)} prompts, {sum(lengths)} tokens")
    times, computed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "passages.db"
        for rep in range(args.reps):
            order = ENGINES[rep % len(ENGINES):] + ENGINES[:rep % len(ENGINES)]
            for engine in order:
                if engine in FLAGS:
                    seconds, tokens = docent(args, workload, engine, db)
                else:
                    seconds = bench.run_server(args, workload, args.parallel)
                    tokens = bench.server_prompt[("passages", args.parallel)][-1][0]
                times.setdefault(engine, []).append(seconds)
                computed.setdefault(engine, []).append(tokens)
                log(f"rep {rep + 1} {engine}: {seconds:.2f} s, {tokens} prompt tokens computed")
    median = {e: statistics.median(v) for e, v in times.items()}
    tree = median[ENGINES[0]]
    lines = [
        "# Generation on passages that repeat: prefix tree, global prefix, llama-server",
        "",
        "Written by `make bench-passages` (`scripts/bench/passages.py`; method in its docstring).",
        "",
        f"- model: `{Path(args.model).name}`, {args.threads} threads, `--parallel {args.parallel}`,"
        f" {args.max_tokens} tokens generated per question (end-of-sequence ignored), greedy",
        f"- questions: `{Path(args.questions).relative_to(ROOT)}` after the system prompt"
        f" `scripts/bench/docent-system-prompt.txt`, {len(prompts)} prompts,"
        f" {sum(lengths)} prompt tokens in all (mean {statistics.mean(lengths):.0f})",
        f"- median of {args.reps} interleaved repetitions; llama-server is built from llama-cpp-python's"
        " vendored llama.cpp (scripts/bench/build-tools.sh)",
        "",
        "| engine | seconds (median) | range | prompt tokens computed | prefix tree speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for engine in ENGINES:
        values = times[engine]
        lines.append(f"| {engine} | {median[engine]:.2f} | {min(values):.2f}–{max(values):.2f} |"
                     f" {statistics.median(computed[engine]):.0f} | {median[engine] / tree:.2f}x |")
    lines += ["", f"Targets: global / tree = {median[ENGINES[1]] / tree:.2f} (>= 1.3);"
              f" llama-server / tree = {median[ENGINES[3]] / tree:.2f} (>= 1.0).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
