#!/usr/bin/env python3
"""`make bench-loglik`: docent-eval's log-likelihood scoring against llama-perplexity
--multiple-choice on the same tasks, model and threads.

The tasks: the bundled multiple-choice questions, each alone and after each passage of
questions/passages_sample.jsonl (so prompts run from ~30 to ~200 tokens), 4 choices each. Both
tools build the same token sequences: BOS + question + " " + choice, no chat template
(docent-eval `--no-chat-template --mc-continuation text`). llama-perplexity reads its binary task
file and reports accuracy only; the copy built here (scripts/bench/build-tools.sh) has its
per-choice log line switched on, which prints the mean log-probability per token of each choice.
docent-eval stores the sum and the token count per choice (choice_scores).

docent-eval stores each continuation token's log-probability, so its mean is taken over the same
span as llama-perplexity's (after the tokens every choice of the task starts with) as well as over
the whole continuation. Reported: how many choices agree within 1e-3 in mean log-probability per
token, how many tasks pick the same choice by that mean, the accuracy of each, wall time and peak
RSS of each, the tokens docent-eval decodes per second while scoring (its log line) against
llama-batched-bench's prompt-processing speed for one sequence of the same mean length in
batches of 512 (docent-eval decodes one question per batch), the questions per second of loglik
against generation (default --max-tokens) on the same set, and every disagreement. Writes
bench/loglik.md.
"""

import argparse
import json
import os
import re
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "bench" / "work"
DOCENT = ROOT / "target" / "release" / "docent-eval"
PERPLEXITY = WORK / "crate-build" / "bin" / "llama-perplexity"
BATCHED_BENCH = WORK / "crate-build" / "bin" / "llama-batched-bench"


def log(message):
    print(f"[bench-loglik {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tasks():
    """(id, question text, choices, answer index) for every task."""
    mc = [json.loads(line) for line in open(ROOT / "questions/korean_history_sample.jsonl", encoding="utf-8")
          if '"choices"' in line]
    passages = []
    for line in open(ROOT / "questions/passages_sample.jsonl", encoding="utf-8"):
        context = json.loads(line)["context"]
        if context not in passages:
            passages.append(context)
    out = []
    for variant, passage in enumerate([None] + passages):
        for q in mc:
            text = q["question"] if passage is None else f"{passage}\n\n{q['question']}"
            out.append((f"{q['id']}-{variant}", text, q["choices"], q["answer_index"]))
    return out


def write_perplexity_tasks(path, items):
    """llama-perplexity's multiple-choice file: u32 count, u32 offsets, then per task the question,
    mc1 (u32 n, n strings, n i32 labels) and an empty mc2; strings are u32 length + bytes."""
    def string(text):
        data = text.encode("utf-8")
        return struct.pack("<I", len(data)) + data
    bodies = []
    for _, question, choices, answer in items:
        body = string(question) + struct.pack("<I", len(choices))
        body += b"".join(string(c) for c in choices)
        body += struct.pack(f"<{len(choices)}i", *[int(i == answer) for i in range(len(choices))])
        body += struct.pack("<I", 0)
        bodies.append(body)
    header_bytes = 4 + 4 * len(bodies)
    offsets, at = [], header_bytes
    for body in bodies:
        offsets.append(at)
        at += len(body)
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(bodies)))
        f.write(struct.pack(f"<{len(offsets)}I", *offsets))
        for body in bodies:
            f.write(body)


def timed(command, env=None):
    """Run a command; (completed process, wall seconds, peak RSS of it in bytes). os.wait4 gives
    this child's own peak RSS, whatever ran before it."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.monotonic() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, child.returncode, out.read(), err.read())
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result, wall, usage.ru_maxrss * 1024


def run_perplexity(args, items, work):
    path = work / "tasks.bin"
    write_perplexity_tasks(path, items)
    result, wall, rss = timed([str(PERPLEXITY), "-m", args.model, "-bf", str(path), "--multiple-choice",
                               "-t", str(args.threads), "-c", str(args.ctx), "-ngl", "0"])
    text = result.stdout + result.stderr
    means = [float(v) for v in
             [line.rsplit(":", 1)[1] for line in text.splitlines() if line.startswith("    <") and " : " in line]]
    expected = sum(len(c) for _, _, c, _ in items)
    if len(means) != expected:
        sys.exit(f"llama-perplexity printed {len(means)} per-choice lines, expected {expected}: "
                 "is the per-choice log line switched on (scripts/bench/build-tools.sh)?")
    per_task, at = [], 0
    for _, _, choices, _ in items:
        per_task.append(means[at:at + len(choices)])
        at += len(choices)
    return per_task, wall, rss


def run_docent(args, items, work, scoring):
    questions = work / "tasks.jsonl"
    with open(questions, "w", encoding="utf-8") as f:
        for task_id, question, choices, answer in items:
            f.write(json.dumps({"id": task_id, "question": question, "choices": choices,
                                "answer_index": answer}, ensure_ascii=False) + "\n")
    db = work / f"{scoring}.db"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    command = [str(DOCENT), "run", "--model", args.model, "--questions", str(questions), "--db", str(db),
               "--threads", str(args.threads), "--parallel", str(args.parallel)]
    if scoring.startswith("loglik"):
        command += ["--mc-scoring", "loglik", "--mc-continuation", "text", "--no-chat-template"]
    result, wall, rss = timed(command, env=dict(os.environ, RUST_LOG="docent_eval=info"))
    connection = sqlite3.connect(db)
    # Tokens decoded while scoring: per question, the tokens all its choices share once, plus
    # each choice's own; over the scoring phase's own time (its log line, model load excluded).
    decoded = connection.execute(
        "select sum(shared + own) from (select max(tokens_reused) as shared, sum(tokens_computed) as own "
        "from choice_scores group by question_id)").fetchone()[0] or 0
    scoring = re.search(r"log-likelihood scoring took ([0-9.]+) s", result.stderr)
    prefill = (decoded, float(scoring.group(1))) if scoring else None
    rows = connection.execute("select question_id, choice_index, token_ids_json, token_logprobs_json "
                              "from choice_scores order by question_id, choice_index").fetchall()
    per_task = {}
    for task_id, _, ids, logprobs in rows:
        per_task.setdefault(task_id, []).append((json.loads(ids), json.loads(logprobs)))
    # Two means per choice: over the whole continuation (lm-evaluation-harness's span), and over
    # what follows the tokens all of the task's choices start with (llama-perplexity's span).
    means = {}
    for task_id, choices in per_task.items():
        shared = 0
        while all(len(ids) > shared + 1 for ids, _ in choices) and len({ids[shared] for ids, _ in choices}) == 1:
            shared += 1
        means[task_id] = [(sum(lp) / len(lp) if lp else float("-inf"),
                           sum(lp[shared:]) / len(lp[shared:]) if lp[shared:] else float("-inf"))
                          for _, lp in choices]
    accuracy = connection.execute("select accuracy from run_summary").fetchone()[0]
    return means, accuracy, wall, rss, prefill


def batched_bench_prefill(args, prompt_tokens):
    """llama-batched-bench's prompt-processing speed (S_PP, tokens/s) for one sequence of
    `prompt_tokens` tokens in batches of 512: the prefill ceiling at docent-eval's batch shape
    (it decodes a question per batch)."""
    result = subprocess.run([str(BATCHED_BENCH), "-m", args.model, "-c", "4096", "-b", "512", "-ub", "512",
                             "-npp", str(prompt_tokens), "-ntg", "1", "-npl", "1", "-t", str(args.threads),
                             "-ngl", "0"], capture_output=True, text=True)
    rows = [line.split("|") for line in result.stdout.splitlines() if re.match(r"\|\s+\d+ \|", line)]
    if result.returncode != 0 or not rows:
        sys.exit(f"llama-batched-bench failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return float(rows[0][6])


def first_argmax(values):
    return max(range(len(values)), key=lambda i: (values[i], -i))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--out", default=str(ROOT / "bench/loglik.md"))
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of the timed pair")
    args = ap.parse_args()
    items = tasks()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The timed pair, interleaved and alternating which goes first; the first repetition's
        # scores are compared (every repetition scores the same).
        walls = {"docent-eval": [], "llama-perplexity": []}
        first = {}
        for rep in range(args.reps):
            pair = ["docent-eval", "llama-perplexity"][::1 if rep % 2 == 0 else -1]
            for tool in pair:
                log(f"{len(items)} tasks, repetition {rep + 1}: {tool}")
                if tool == "docent-eval":
                    result = run_docent(args, items, work, "loglik")
                    wall = result[2]
                else:
                    result = run_perplexity(args, items, work)
                    wall = result[1]
                walls[tool].append(wall)
                first.setdefault(tool, result)
        ours, our_accuracy, _, our_rss, prefill = first["docent-eval"]
        theirs, _, their_rss = first["llama-perplexity"]
        our_wall = statistics.median(walls["docent-eval"])
        their_wall = statistics.median(walls["llama-perplexity"])
        ratios = [a / b for a, b in zip(walls["docent-eval"], walls["llama-perplexity"])]
        if prefill is None:
            sys.exit("docent-eval printed no 'log-likelihood scoring took' line")
        decoded, scoring_seconds = prefill
        per_question = round(decoded / len(items))
        log(f"llama-batched-bench prefill of {per_question} tokens")
        ceiling = batched_bench_prefill(args, per_question)
        # Loglik against generation in questions per second: on the 30 questions without a
        # passage (generation at the default --max-tokens takes minutes per hundred questions).
        plain = [t for t in items if t[0].endswith("-0")]
        log(f"docent-eval loglik and generation (default --max-tokens) on {len(plain)} questions")
        _, plain_accuracy, plain_wall, _, _ = run_docent(args, plain, work, "loglik-plain")
        _, generate_accuracy, generate_wall, _, _ = run_docent(args, plain, work, "generate")
    compared = close = close_whole = same_pick = correct_theirs = 0
    disagreements = []
    for (task_id, _, choices, answer), their in zip(items, theirs):
        pairs = ours.get(task_id, [])
        our = [span for _, span in pairs]
        for index, ((whole, a), b) in enumerate(zip(pairs, their)):
            compared += 1
            close_whole += int(abs(whole - b) <= 1e-3)
            if abs(a - b) <= 1e-3:
                close += 1
            else:
                disagreements.append(f"| {task_id} | {index} | {choices[index]} | {a:.5f} | {b:.5f} | {a - b:+.5f} |")
        same_pick += int(bool(our) and first_argmax(our) == first_argmax(their))
        correct_theirs += int(first_argmax(their) == answer)
    n = len(items)
    lines = [
        "# Log-likelihood scoring against llama-perplexity",
        "",
        "Written by `make bench-loglik` (`scripts/bench/loglik.py`; method in its docstring and in",
        "[README.md](README.md)). Same model, tasks, token sequences and threads.",
        "",
        f"- model: `{Path(args.model).name}`, {args.threads} threads; docent-eval `--parallel {args.parallel}`;"
        f" llama-perplexity `-c {args.ctx}`",
        f"- tasks: {n} (the bundled multiple-choice questions alone and after each of 4 passages), 4 choices each",
        "",
        "| figure | docent-eval | llama-perplexity |",
        "|---|---:|---:|",
        f"| choices whose mean log-probability per token agrees within 1e-3, over llama-perplexity's span (after the tokens all choices share) | {close}/{compared} ({100 * close / compared:.1f} %) | |",
        f"| the same over the whole continuation (lm-evaluation-harness's span, docent-eval's acc) | {close_whole}/{compared} ({100 * close_whole / compared:.1f} %) | |",
        f"| tasks where the per-token mean picks the same choice | {same_pick}/{n} ({100 * same_pick / n:.1f} %) | |",
        f"| accuracy (docent-eval: acc; llama-perplexity: per-token mean) | {100 * our_accuracy:.1f} % | {100 * correct_theirs / n:.1f} % |",
        f"| wall time, s (median of {args.reps} interleaved repetitions) | {our_wall:.1f} | {their_wall:.1f} |",
        f"| wall time ratio docent-eval / llama-perplexity, per repetition | {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}) | |",
        f"| peak RSS, MiB | {our_rss / 2**20:.0f} | {their_rss / 2**20:.0f} |",
        f"| tokens decoded per second while scoring ({decoded} tokens in {scoring_seconds:.1f} s, {per_question} per question) vs llama-batched-bench S_PP at {per_question} tokens, batch 512 | {decoded / scoring_seconds:.0f} vs {ceiling:.0f} (ratio {decoded / scoring_seconds / ceiling:.2f}) | |",
        f"| questions/s on the {len(plain)} questions without a passage: loglik vs generation (default --max-tokens), whole runs | {len(plain) / plain_wall:.2f} vs {len(plain) / generate_wall:.2f} | |",
        f"| accuracy on those: loglik acc vs generation (parsed answers) | {100 * (plain_accuracy or 0):.1f} % vs {100 * (generate_accuracy or 0):.1f} % | |",
        "",
        "Disagreements beyond 1e-3:",
        "",
        "| task | choice | text | docent-eval | llama-perplexity | difference |",
        "|---|---:|---|---:|---:|---:|",
    ] + (disagreements or ["| (none) | | | | | |"])
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
