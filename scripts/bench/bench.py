#!/usr/bin/env python3
"""`make bench`: docent-eval against llama.cpp's own tools on the same work.

For each workload (the bundled questions as they are, and the same with a ~300-token system
prompt) every engine prefills the same prompts (docent-eval's rendered chat-template prompts) and
generates exactly --max-tokens tokens per question (end-of-sequence ignored):

  docent-eval        `run --parallel N --ignore-eos`; time = its decode loop (log line)
  batched-bench      llama-batched-bench -npp PP -ntg TG -npl N; time for the same number of
                     questions = T(N) * questions / N (the in-process ceiling)
  llama-server       `llama-server -np N` started cold for each measurement, N concurrent HTTP
                     clients; time = first request to last response
  llama-cpp-python   a plain loop, one question at a time; time = the loop

Measurements are interleaved (every engine and N once, then again) and the median of --reps is
reported. Writes a Markdown table with the machine, model, commits and commands.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "bench" / "work"
DOCENT = ROOT / "target" / "release" / "docent-eval"
BATCHED_BENCH = WORK / "crate-build" / "bin" / "llama-batched-bench"
SERVER = WORK / "lcp-build" / "bin" / "llama-server"
LIBDIR = WORK / "lcp-build" / "bin"


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rendered_prompts(args, system_file):
    command = [str(DOCENT), "prompts", "--model", args.model, "--questions", args.questions,
               "--limit", str(args.questions_n)]
    if system_file:
        command += ["--system-file", str(system_file)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def run_docent(args, workload, n, db, discard=False):
    command = [str(DOCENT), "run", "--model", args.model, "--questions", args.questions,
               "--db", str(db), "--limit", str(args.questions_n), "--max-tokens", str(args.max_tokens),
               "--ignore-eos", "--parallel", str(n), "--threads", str(args.threads)]
    if workload["system_file"]:
        command += ["--system-file", str(workload["system_file"])]
    if discard:
        command.append("--bench-discard-answers")
    env = dict(os.environ, RUST_LOG="docent_eval=info")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    match = re.search(r"decode loop: (\d+) questions in ([0-9.]+) s", result.stderr)
    if result.returncode != 0 or not match or int(match.group(1)) != args.questions_n:
        raise RuntimeError(f"docent-eval failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return float(match.group(2))


def run_batched_bench(args, workload, n):
    pp, tg = workload["mean_prompt_tokens"], args.max_tokens
    ctx = n * (pp + tg) + 256
    command = [str(BATCHED_BENCH), "-m", args.model, "-c", str(ctx), "-b", "512", "-ub", "512",
               "-npp", str(pp), "-ntg", str(tg), "-npl", str(n), "-t", str(args.threads),
               "-tb", str(args.threads), "--output-format", "jsonl"]
    result = subprocess.run(command, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if line.startswith("{") and '"t"' in line:
            row = json.loads(line)
            return row["t"] * args.questions_n / n
    raise RuntimeError(f"batched-bench failed ({result.returncode}):\n{result.stderr[-2000:]}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body, timeout=600):
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def run_server(args, workload, n):
    port = free_port()
    ctx = n * (workload["max_prompt_tokens"] + args.max_tokens + 64)
    command = [str(SERVER), "-m", args.model, "-np", str(n), "-c", str(ctx), "-b", "512",
               "-ub", "512", "-t", str(args.threads), "-tb", str(args.threads),
               "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    env = dict(os.environ, LD_LIBRARY_PATH=str(LIBDIR))
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("llama-server did not start: " + server.stderr.read().decode()[-2000:])
            time.sleep(0.2)

        def ask(prompt):
            reply = post(f"http://127.0.0.1:{port}/completion", {
                "prompt": prompt, "n_predict": args.max_tokens, "ignore_eos": True,
                "temperature": 0, "cache_prompt": True})
            return reply["tokens_predicted"]

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            predicted = list(pool.map(ask, [p["prompt"] for p in workload["prompts"]]))
        elapsed = time.perf_counter() - start
        if any(t != args.max_tokens for t in predicted):
            raise RuntimeError(f"llama-server generated {predicted} tokens, not {args.max_tokens}")
        return elapsed
    finally:
        server.terminate()
        server.wait(timeout=30)


_python_model = {}


def run_python(args, workload):
    os.environ["LLAMA_CPP_LIB_PATH"] = str(LIBDIR)
    import llama_cpp  # noqa: E402  (imported late: needs LLAMA_CPP_LIB_PATH)

    key = (args.model, workload["max_prompt_tokens"])
    if key not in _python_model:
        llm = llama_cpp.Llama(model_path=args.model, n_ctx=workload["max_prompt_tokens"] + args.max_tokens + 64,
                              n_threads=args.threads, n_batch=512, verbose=False)
        eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)]
        _python_model.clear()
        _python_model[key] = (llm, {t: float("-inf") for t in eog})
    llm, no_eos = _python_model[key]
    start = time.perf_counter()
    for prompt in workload["prompts"]:
        out = llm.create_completion(prompt["prompt"], max_tokens=args.max_tokens, temperature=0.0,
                                    repeat_penalty=1.0, logit_bias=no_eos)
        # Its usage counts one token more than max_tokens (the loop appends before it checks);
        # what matters is that it never generates fewer.
        if out["usage"]["completion_tokens"] < args.max_tokens:
            raise RuntimeError(f"llama-cpp-python generated {out['usage']['completion_tokens']} tokens")
    return time.perf_counter() - start


def identical_answers(args):
    """Greedy answers at --parallel 1 versus 8 on the bundled questions: byte-identical count."""
    answers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 8):
            db = Path(tmp) / f"p{n}.db"
            subprocess.run([str(DOCENT), "run", "--model", args.model, "--questions", args.questions,
                            "--db", str(db), "--max-tokens", str(args.max_tokens), "--parallel", str(n),
                            "--threads", str(args.threads)], check=True, capture_output=True)
            out = subprocess.run(["sqlite3", str(db), "select question_id, hex(answer) from answers"],
                                 check=True, capture_output=True, text=True).stdout
            answers[n] = dict(line.split("|", 1) for line in out.splitlines())
    same = sum(1 for q, a in answers[1].items() if answers[8].get(q) == a)
    return same, len(answers[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    parser.add_argument("--questions", default=str(ROOT / "questions" / "korean_history_sample.jsonl"))
    parser.add_argument("--questions-n", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--parallel", default="1,2,4,8,16")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", default="docent,batched,server,python")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--skip-identical", action="store_true", help="skip the parallel 1 vs 8 answer comparison")
    args = parser.parse_args()
    parallel = [int(n) for n in args.parallel.split(",")]
    engines = args.engines.split(",")

    workloads = []
    for name, system_file in [("bundled questions", None),
                              ("with a ~300-token system prompt", ROOT / "scripts" / "bench" / "docent-system-prompt.txt")]:
        prompts = rendered_prompts(args, system_file)
        lengths = [p["prompt_tokens"] for p in prompts]
        workloads.append({"name": name, "system_file": system_file, "prompts": prompts,
                          "mean_prompt_tokens": round(statistics.mean(lengths)),
                          "max_prompt_tokens": max(lengths), "prompt_tokens_total": sum(lengths)})
        log(f"workload '{name}': {len(prompts)} prompts, mean {statistics.mean(lengths):.1f} tokens")

    times = {}  # (workload index, engine, n) -> [seconds]
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for w, workload in enumerate(workloads):
                db = Path(tmp) / f"w{w}.db"
                for n in parallel:
                    plan = [("docent-eval", lambda: run_docent(args, workload, n, db))]
                    if n in (1, 8):
                        plan.append(("docent-eval, no store/sampler",
                                     lambda: run_docent(args, workload, n, db, discard=True)))
                    if "batched" in engines:
                        plan.append(("llama-batched-bench", lambda: run_batched_bench(args, workload, n)))
                    if "server" in engines:
                        plan.append(("llama-server + client", lambda: run_server(args, workload, n)))
                    if "python" in engines and n == 1:
                        plan.append(("llama-cpp-python loop", lambda: run_python(args, workload)))
                    for engine, measure in plan:
                        seconds = measure()
                        times.setdefault((w, engine, n), []).append(seconds)
                        log(f"rep {rep + 1} {workload['name']} {engine} N={n}: {seconds:.2f} s")

    same, total = (None, None) if args.skip_identical else identical_answers(args)
    write_report(args, workloads, parallel, times, same, total)


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.platform()}"


def write_report(args, workloads, parallel, times, same, total):
    lines = ["# docent-eval benchmark", "",
             f"- Machine: {machine()}",
             f"- Model: `{Path(args.model).name}`; {args.questions_n} questions from `{Path(args.questions).name}`, "
             f"{args.max_tokens} generated tokens each (end-of-sequence ignored), {args.threads} threads, greedy",
             f"- Median of {args.reps} interleaved repetitions; times exclude model loading.",
             f"- docent-eval: `{subprocess.run([str(DOCENT), '--version'], capture_output=True, text=True).stdout.strip()}`"]
    tools = WORK / "tools.txt"
    if tools.exists():
        lines += [f"- {line}" for line in tools.read_text().splitlines()]
    lines += ["- Command: `python3 scripts/bench/bench.py " + " ".join(sys.argv[1:]) + "` (via `make bench`)", ""]
    for w, workload in enumerate(workloads):
        q = args.questions_n
        gen = q * args.max_tokens
        lines += [f"## {workload['name']} (mean prompt {workload['mean_prompt_tokens']} tokens)", "",
                  "| engine | N | wall s | questions/s | prompt tok/s | generated tok/s | docent-eval speed-up |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for n in parallel:
            base = times.get((w, "docent-eval", n))
            for engine in ["docent-eval", "docent-eval, no store/sampler", "llama-batched-bench",
                           "llama-server + client", "llama-cpp-python loop"]:
                if (w, engine, n) not in times:
                    continue
                t = statistics.median(times[(w, engine, n)])
                ratio = statistics.median(base) and t / statistics.median(base)
                lines.append(f"| {engine} | {n} | {t:.2f} | {q / t:.2f} | {workload['prompt_tokens_total'] / t:.0f} | "
                             f"{gen / t:.1f} | {ratio:.2f}x |")
        lines.append("")
        checks = []
        for n in parallel:
            d = statistics.median(times[(w, "docent-eval", n)])
            if (w, "llama-batched-bench", n) in times:
                b = statistics.median(times[(w, "llama-batched-bench", n)])
                checks.append(f"N={n}: docent-eval / batched-bench = {d / b:.3f} (target <= 1.05)")
            if (w, "llama-server + client", n) in times:
                s = statistics.median(times[(w, "llama-server + client", n)])
                checks.append(f"N={n}: server / docent-eval = {s / d:.3f} (target >= 1.0{', 1.2 here' if w == 1 else ''})")
            if (w, "docent-eval, no store/sampler", n) in times:
                nd = statistics.median(times[(w, "docent-eval, no store/sampler", n)])
                checks.append(f"N={n}: store + sampler overhead = {100 * (d - nd) / nd:+.1f} % of wall time (target <= 2 %)")
        if (w, "llama-cpp-python loop", 1) in times:
            p = statistics.median(times[(w, "llama-cpp-python loop", 1)])
            best = min(statistics.median(times[(w, "docent-eval", n)]) for n in parallel)
            checks.append(f"llama-cpp-python loop / best docent-eval = {p / best:.2f} (target >= 1.3)")
        if (w, "docent-eval", 8) in times and (w, "docent-eval", 1) in times:
            r = statistics.median(times[(w, "docent-eval", 1)]) / statistics.median(times[(w, "docent-eval", 8)])
            checks.append(f"docent-eval --parallel 8 / --parallel 1 speed = {r:.2f} (target >= 1.3)")
        lines += ["Ratios:", ""] + [f"- {c}" for c in checks] + [""]
    if same is not None:
        lines += [f"Greedy answers byte-identical between `--parallel 1` and `--parallel 8` "
                  f"(all {total} bundled questions, {args.max_tokens} max tokens): **{same}/{total}**.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
