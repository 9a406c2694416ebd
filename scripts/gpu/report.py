#!/usr/bin/env python3
"""Write bench/gpu.md from a device-check.sh work folder: one docent-eval database and log per N,
llama-batched-bench's jsonl rows and the preflight text. Standard library only (the GPU machine
has no sqlite3 shell).

    report.py WORK OUT.md PRESET MODEL_SECONDS PROMPT_TOKENS MAX_TOKENS
"""
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys


def gib(b):
    return f"{b / 2**30:.2f}" if b is not None else "-"


def num(v, fmt="{:.1f}"):
    return fmt.format(v) if v is not None else "-"


def batched_bench(work):
    rows = {}
    path = f"{work}/batched.jsonl"
    if os.path.exists(path):
        for line in open(path):
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if "pl" in r:
                rows[int(r["pl"])] = r
    return rows


def gpu_name():
    if not shutil.which("nvidia-smi"):
        return ""
    return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip()


def main():
    work, out, preset, model_s, pp, max_tokens = sys.argv[1:7]
    bb = batched_bench(work)
    rows, placement = [], "-"
    db = sqlite3.connect(f"{work}/runs.db")
    db.row_factory = sqlite3.Row
    for line in open(f"{work}/runs.txt"):
        n, run_id = (int(x) for x in line.split())
        s = db.execute("select * from run_summary where run_id = ?", (run_id,)).fetchone()
        engine = json.loads(db.execute("select engine_json from runs where id = ?", (run_id,)).fetchone()[0])
        place = engine.get("placement", {})
        placement = f"{place.get('gpu_layers')} layers offloaded ({place.get('reason')})"
        log = open(f"{work}/run{n}.log", encoding="utf-8", errors="replace").read()
        decode_s = float(re.findall(r"decode loop: \d+ questions in ([0-9.]+) s", log)[-1])
        tps = s["completion_tokens"] / decode_s
        ref = bb.get(n)
        # batched-bench's same work: pl sequences of pp prompt and tg generated tokens; generated
        # tokens over its whole time, prompt processing included as in docent-eval's decode loop.
        ref_tps = ref["pl"] * ref["tg"] / ref["t"] if ref else None
        rows.append(
            f"| {n} | {s['total']} | {tps:.1f} | {num(ref_tps)} | {num(tps / ref_tps if ref_tps else None, '{:.2f}')} | "
            f"{num(ref['speed_tg'] if ref else None)} | {num(s['mean_ttft_ms'])} | {num(s['p50_ttft_ms'])} | "
            f"{gib(s['predicted_gpu_bytes'])} | {gib(s['peak_gpu_used_bytes'])} | {num(s['gpu_prediction_error_pct'])} | "
            f"{gib(s['peak_rss_bytes'])} |")
    lines = [
        "# docent-eval on a GPU",
        "",
        "Written by `scripts/gpu/device-check.sh` (method: [README.md](README.md#on-a-gpu)).",
        "",
        f"- GPU: {gpu_name() or 'none (CPU fallback run)'}",
        f"- model: {preset} shapes, random Q4_0 weights (generated in {float(model_s):.0f} s); {placement}",
        f"- work: {pp}-token prompts (mean), {max_tokens} generated tokens each (end-of-sequence ignored), greedy",
        "- tok/s: generated tokens over docent-eval's decode loop (prompts included); batched-bench: `pl*tg/t`"
        " for the same shapes; S_TG is its generation-only speed",
        "",
        "| N | questions | docent-eval tok/s | batched-bench tok/s | ratio | batched-bench S_TG | mean TTFT ms |"
        " p50 TTFT ms | GPU predicted GiB | GPU peak GiB | GPU error % | peak RSS GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + rows
    lines += ["", "llama-batched-bench (`--output-format jsonl`):", "", "```"]
    lines += [json.dumps(bb[k]) for k in sorted(bb)] or ["(not run)"]
    lines += ["```", "", "`docent-eval preflight` at the largest N:", "", "```"]
    lines += open(f"{work}/preflight.txt").read().rstrip().splitlines()
    lines += ["```", ""]
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
