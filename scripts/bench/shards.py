#!/usr/bin/env python3
"""`make bench-shards`: sharding on one machine, and the cost of `merge`.

1. The bundled set (60 questions) on SmolLM2, --max-tokens N with end-of-sequence ignored (the
   same tokens for every engine), in one process (--parallel 4, all cores) against 4 shards run
   at once (`--shard K/4`, --parallel 4, one thread each: the same cores shared four ways)
   followed by `merge`. Wall time is from the first process started to the last one ended
   (model loads included), questions/hour is 60 over it. The two are interleaved, --reps times,
   and the medians reported, with how many greedy answers differ between the merged run and the
   single process (llama.cpp's results depend on what else is in the batch).
2. Merge time for 4 shards x 2,223 answers (a synthetic 8,892-question set answered with
   --max-tokens 1 by a tiny random-weight Llama with SmolLM2's tokenizer, written by
   scripts/make_gguf.py): `merge --into` a new file, and the same merge again (nothing new).

Writes bench/shards.md.
"""

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "docent-eval"


def log(message):
    print(f"[bench-shards {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args, **kwargs):
    return subprocess.run([str(BIN), *args], check=False, capture_output=True, text=True, **kwargs)


def start(args):
    return subprocess.Popen([str(BIN), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_args(model, questions, db, extra):
    return ["run", "--model", str(model), "--questions", str(questions), "--db", str(db), *extra]


def single(args, work, rep, parallel=4):
    db = work / f"single-{parallel}-{rep}.db"
    t0 = time.monotonic()
    out = run(run_args(args.model, args.questions, db, [
        "--max-tokens", str(args.max_tokens), "--ignore-eos", "--parallel", str(parallel),
        "--threads", str(args.threads)]))
    seconds = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"single run failed: {out.stderr[-2000:]}")
    return seconds, db


def single16(args, work, rep):
    return single(args, work, rep, parallel=16)


def sharded(args, work, rep):
    dbs = [work / f"shard-{rep}-{k}.db" for k in range(4)]
    t0 = time.monotonic()
    procs = [start(run_args(args.model, args.questions, db, [
        "--shard", f"{k}/4", "--max-tokens", str(args.max_tokens), "--ignore-eos", "--parallel", "4",
        "--threads", "1"])) for k, db in enumerate(dbs)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"shard failed: {err[-2000:]}")
    runs_s = time.monotonic() - t0
    merged = work / f"merged-{rep}.db"
    t1 = time.monotonic()
    out = run(["merge", "--into", str(merged), *map(str, dbs)])
    merge_s = time.monotonic() - t1
    if out.returncode != 0:
        sys.exit(f"merge failed: {out.stdout}{out.stderr[-2000:]}")
    return runs_s + merge_s, merge_s, merged


def answers(db):
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT question_id, answer FROM answers WHERE run_id = 1"))


def tiny_model(work):
    path = work / "tiny-llama.gguf"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_gguf.py"), "--arch", "llama", "--layers", "2",
                    "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "128", "--vocab-from",
                    str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"), "--out", str(path)],
                   check=True, capture_output=True)
    return path


def merge_time(args, work):
    questions = work / "kmmlu-sized.jsonl"
    with questions.open("w") as f:
        for i in range(4 * 2223):
            f.write(json.dumps({"id": f"q{i:05d}", "question": f"조선의 {i}번째 왕은 누구인가?",
                                "answer": "세종"}, ensure_ascii=False) + "\n")
    model = tiny_model(work)
    dbs = []
    t0 = time.monotonic()
    procs = []
    for k in range(4):
        db = work / f"big-shard-{k}.db"
        dbs.append(db)
        procs.append(start(run_args(model, questions, db, [
            "--shard", f"{k}/4", "--max-tokens", "1", "--parallel", "16", "--threads", "1",
            "--sample-interval-ms", "1000"])))
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"shard of the large set failed: {err[-2000:]}")
    log(f"4 shards of {4 * 2223} questions answered in {time.monotonic() - t0:.0f} s")
    rows = []
    for db in dbs:
        with sqlite3.connect(db) as c:
            rows.append(c.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
    fresh, again = [], []
    for rep in range(args.reps):
        merged = work / f"big-merged-{rep}.db"
        t = time.monotonic()
        out = run(["merge", "--into", str(merged), *map(str, dbs)])
        fresh.append(time.monotonic() - t)
        if out.returncode != 0:
            sys.exit(f"merge failed: {out.stdout}{out.stderr[-2000:]}")
        t = time.monotonic()
        run(["merge", "--into", str(merged), *map(str, dbs)])
        again.append(time.monotonic() - t)
    with sqlite3.connect(work / "big-merged-0.db") as c:
        merged_rows = c.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    return rows, merged_rows, fresh, again


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--questions", default=str(ROOT / "questions" / "korean_history_sample.jsonl"))
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "shards.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        work = Path(tmp)
        single_s, single16_s, sharded_s, merge_s, differ = [], [], [], [], []
        for rep in range(args.reps):
            order = [single, single16, sharded]
            order = order[rep % 3:] + order[:rep % 3]  # rotated: no engine always first
            result = {}
            for fn in order:
                result[fn.__name__] = fn(args, work, rep)
            single_s.append(result["single"][0])
            single16_s.append(result["single16"][0])
            sharded_s.append(result["sharded"][0])
            merge_s.append(result["sharded"][1])
            one, merged = answers(result["single"][1]), answers(result["sharded"][2])
            assert one.keys() == merged.keys(), "the merged run lacks questions"
            differ.append(sum(one[k] != merged[k] for k in one))
            log(f"rep {rep}: one process {single_s[-1]:.1f} s / {single16_s[-1]:.1f} s at --parallel 16, 4 shards + merge {sharded_s[-1]:.1f} s "
                f"(merge {merge_s[-1]:.2f} s), {differ[-1]} answers differ")
        rows, merged_rows, fresh, again = merge_time(args, work)
    med = statistics.median
    n = 60
    lines = [
        "# Shards on one machine, and merge time",
        "",
        f"`make bench-shards` ({time.strftime('%Y-%m-%d')}, this 2-core machine, `scripts/bench/shards.py`).",
        "",
        f"## 4 shards vs one process (bundled set, {n} questions, SmolLM2, {args.max_tokens} tokens each)",
        "",
        "| | wall (median of {}) | questions/hour | per repetition |".format(args.reps),
        "|---|---:|---:|---|",
        f"| one process, --parallel 4, {args.threads} threads | {med(single_s):.1f} s | {3600 * n / med(single_s):.0f} | "
        + ", ".join(f"{s:.1f}" for s in single_s) + " |",
        f"| one process, --parallel 16, {args.threads} threads | {med(single16_s):.1f} s | {3600 * n / med(single16_s):.0f} | "
        + ", ".join(f"{s:.1f}" for s in single16_s) + " |",
        f"| 4 shards at once (--parallel 4, 1 thread each) + merge | {med(sharded_s):.1f} s | {3600 * n / med(sharded_s):.0f} | "
        + ", ".join(f"{s:.1f}" for s in sharded_s) + " |",
        "",
        f"Wall time of the 4 shards / one process at --parallel 4: {med(sharded_s) / med(single_s):.2f} (per repetition: "
        + ", ".join(f"{b / a:.2f}" for a, b in zip(single_s, sharded_s)) + "); "
        f"/ one process at --parallel 16: {med(sharded_s) / med(single16_s):.2f} (per repetition: "
        + ", ".join(f"{b / a:.2f}" for a, b in zip(single16_s, sharded_s)) + "). "
        f"The merge of the 4 shards took {med(merge_s):.2f} s of the shards' time.",
        "",
        "The 4 shards decode 4 x 4 sequences at once on the same 2 cores, so they compare with one process "
        "at --parallel 16 as much as with one at --parallel 4; each also loads the model once. On one "
        "machine the shards share its cores: they add throughput where each gets its own GPU or node.",
        "",
        f"Greedy answers that differ between the merged run and the single process: "
        + ", ".join(str(d) for d in differ) + f" of {n} (per repetition). Each shard batches other "
        "questions together, and llama.cpp's results depend on what else is in the batch.",
        "",
        f"## Merge time: 4 shards x 2,223 answers",
        "",
        f"Shard databases of {', '.join(map(str, rows))} answers ({sum(rows)} in all); the merged run holds {merged_rows}.",
        "",
        "| | median | per repetition |",
        "|---|---:|---|",
        f"| `merge --into` a new file | {med(fresh):.2f} s | " + ", ".join(f"{s:.2f}" for s in fresh) + " |",
        f"| the same merge again (nothing new) | {med(again):.2f} s | " + ", ".join(f"{s:.2f}" for s in again) + " |",
        "",
        "Target: under one second. The time includes the process start and reading each shard's partition of the "
        "whole set.",
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    log(f"wrote {args.out}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
