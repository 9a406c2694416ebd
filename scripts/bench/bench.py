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

Measurements are interleaved (every engine and N once, then again, the engines' order within a
cell rotated every repetition) and the median of --reps is reported. Writes a Markdown table with the machine, model, commits and commands.
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


def run_docent(args, workload, n, db, discard=False, extra=()):
    command = [str(DOCENT), "run", "--model", args.model, "--questions", args.questions,
               "--db", str(db), "--limit", str(args.questions_n), "--max-tokens", str(args.max_tokens),
               "--ignore-eos", "--parallel", str(n), "--threads", str(args.threads), *extra]
    if workload["system_file"]:
        command += ["--system-file", str(workload["system_file"])]
    if discard:
        command.append("--bench-discard-answers")
    env = dict(os.environ, RUST_LOG="docent_eval=info")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    match = re.search(r"decode loop: (\d+) questions in ([0-9.]+) s", result.stderr)
    if result.returncode != 0 or not match or int(match.group(1)) != args.questions_n:
        raise RuntimeError(f"docent-eval failed ({result.returncode}):\n{result.stderr[-2000:]}")
    built = re.search(r"prompt prefixes: \d+ shared \((\d+) tokens computed once\)", result.stderr)
    docent_prefix_built.append(int(built.group(1)) if built else 0)
    prefix = re.search(r"shared prompt prefix: (\d+) tokens", result.stderr)
    if prefix:
        docent_prefix[workload["name"]] = int(prefix.group(1))
    cost = re.search(r"recording cost: recorder thread ([0-9.]+) ms CPU .*decode thread ([0-9.]+) ms on answers", result.stderr)
    if cost:
        recording_cpu.setdefault((workload["name"], n, discard), []).append(
            (float(cost.group(1)), float(cost.group(2)), float(match.group(2))))
    return float(match.group(2))


recording_cpu = {}  # (workload name, n, discard) -> [(recorder ms, decode-thread ms, loop s)]
batched_rates = {}  # (workload name, n) -> [(prompt tok/s, generation tok/s)]
docent_prefix = {}  # workload name -> shared prompt prefix docent-eval prefilled once
docent_prefix_built = []  # per docent-eval run: prompt prefix tokens it computed once
server_prompt = {}  # (workload name, n) -> [(prompt tokens computed, prompt tokens sent)]


def run_batched_bench(args, workload, n):
    """The same work in one process: ceil(questions / N) rounds of N sequences (prefill PP tokens
    each, then TG tokens each), summed. Its own warm-up run is not counted."""
    pp, tg = workload["mean_prompt_tokens"], args.max_tokens
    rounds = -(-args.questions_n // n)
    ctx = n * (pp + tg) + 256
    command = [str(BATCHED_BENCH), "-m", args.model, "-c", str(ctx), "-b", "512", "-ub", "512",
               "-npp", str(pp), "-ntg", str(tg), "-npl", ",".join([str(n)] * rounds), "-t", str(args.threads),
               "-tb", str(args.threads), "--output-format", "jsonl"]
    result = subprocess.run(command, capture_output=True, text=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{") and '"t"' in line]
    if result.returncode != 0 or len(rows) != rounds:
        raise RuntimeError(f"batched-bench failed ({result.returncode}):\n{result.stderr[-2000:]}")
    batched_rates.setdefault((workload["name"], n), []).append(
        (statistics.median(r["speed_pp"] for r in rows), statistics.median(r["speed_tg"] for r in rows)))
    # Rounds beyond the question count (16 is a multiple of every N here) would be extra work.
    return sum(r["t"] for r in rows) * args.questions_n / (rounds * n)


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
            return reply["tokens_predicted"], reply.get("timings", {}).get("prompt_n")

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
            replies = list(pool.map(ask, [p["prompt"] for p in workload["prompts"]]))
        elapsed = time.perf_counter() - start
        predicted = [r[0] for r in replies]
        if all(r[1] is not None for r in replies):
            server_prompt.setdefault((workload["name"], n), []).append(
                (sum(r[1] for r in replies), workload["prompt_tokens_total"]))
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
    parser.add_argument("--from-json", help="rewrite the report from the raw data a previous run saved next to it")
    args = parser.parse_args()
    if args.from_json:
        rewrite_report(args)
        return
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
    history = []  # (rep, workload, engine, n, seconds, steal %) in the order measured
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
                    # Rotate the order every repetition: whatever runs first in a cell (just after
                    # the previous cell's llama-server exits) must not always be the same engine.
                    shift = rep % len(plan)
                    plan = plan[shift:] + plan[:shift]
                    for engine, measure in plan:
                        before = cpu_ticks()
                        seconds = measure()
                        steal = steal_percent(before, cpu_ticks())
                        times.setdefault((w, engine, n), []).append(seconds)
                        history.append((rep + 1, workload["name"], engine, n, seconds, steal))
                        log(f"rep {rep + 1} {workload['name']} {engine} N={n}: {seconds:.2f} s (steal {steal:.1f} %)")

    same, total = (None, None) if args.skip_identical else identical_answers(args)
    save_raw(args, workloads, parallel, times, history, same, total)
    write_report(args, workloads, parallel, times, history, same, total)


def raw_path(out):
    return Path(out).with_suffix(".json")


def save_raw(args, workloads, parallel, times, history, same, total):
    """Every measurement as measured, so the report can be rewritten without measuring again."""
    raw = {
        "args": {k: v for k, v in vars(args).items() if k != "from_json"},
        "argv": sys.argv[1:],
        "workloads": [{k: (str(v) if k == "system_file" and v else v) for k, v in w.items()} for w in workloads],
        "parallel": parallel,
        "times": [[w, engine, n, values] for (w, engine, n), values in times.items()],
        "history": history,
        "same": same,
        "total": total,
        "recording_cpu": [[name, n, discard, values] for (name, n, discard), values in recording_cpu.items()],
        "batched_rates": [[name, n, values] for (name, n), values in batched_rates.items()],
        "server_prompt": [[name, n, values] for (name, n), values in server_prompt.items()],
        "docent_prefix": docent_prefix,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    raw_path(args.out).write_text(json.dumps(raw, ensure_ascii=False, indent=1))


def rewrite_report(args):
    raw = json.loads(Path(args.from_json).read_text())
    out = args.out
    for key, value in raw["args"].items():
        setattr(args, key, value)
    args.out = out
    sys.argv[1:] = raw["argv"]
    times = {(w, engine, n): values for w, engine, n, values in raw["times"]}
    recording_cpu.update({(name, n, discard): [tuple(v) for v in values]
                          for name, n, discard, values in raw["recording_cpu"]})
    batched_rates.update({(name, n): [tuple(v) for v in values] for name, n, values in raw["batched_rates"]})
    server_prompt.update({(name, n): [tuple(v) for v in values] for name, n, values in raw["server_prompt"]})
    docent_prefix.update(raw["docent_prefix"])
    write_report(args, raw["workloads"], raw["parallel"], times, [tuple(h) for h in raw["history"]],
                 raw["same"], raw["total"])


def cpu_ticks():
    """Aggregate CPU ticks from /proc/stat: (total, steal). Steal is time the hypervisor gave this
    VM's virtual CPUs to someone else: the main source of noise on shared machines."""
    try:
        fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def steal_percent(before, after):
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else 0.0


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


def write_report(args, workloads, parallel, times, history, same, total):
    def med(key):
        return statistics.median(times[key])

    def spread(key):
        values = times[key]
        return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else "–"

    lines = ["# docent-eval benchmark", "",
             f"- Machine: {machine()}",
             f"- Model: `{Path(args.model).name}`; {args.questions_n} questions from `{Path(args.questions).name}`, "
             f"{args.max_tokens} generated tokens each (end-of-sequence ignored), {args.threads} threads, greedy",
             f"- Median of {args.reps} interleaved repetitions (range = fastest–slowest); times exclude model "
             "loading. Every measurement with the CPU steal time the hypervisor reported during it is listed at the end.",
             f"- docent-eval: `{subprocess.run([str(DOCENT), '--version'], capture_output=True, text=True).stdout.strip()}`"]
    tools = WORK / "tools.txt"
    if tools.exists():
        lines += [f"- {line}" for line in tools.read_text().splitlines()]
    lines += ["- llama-batched-bench does the same work in one process: ceil(questions / N) rounds of N sequences "
              "(`-npl N,N,…`), mean prompt length, summed; llama-server is started cold per measurement.",
              "- Command: `python3 scripts/bench/bench.py " + " ".join(sys.argv[1:]) + "` (via `make bench`)", ""]
    for w, workload in enumerate(workloads):
        q = args.questions_n
        gen = q * args.max_tokens
        name = workload["name"]
        lines += [f"## {name} (mean prompt {workload['mean_prompt_tokens']} tokens)", "",
                  "| engine | N | wall s (median) | range s | questions/s | prompt tok/s | generated tok/s | docent-eval speed-up |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for n in parallel:
            base = times.get((w, "docent-eval", n))
            for engine in ["docent-eval", "docent-eval, no store/sampler", "llama-batched-bench",
                           "llama-server + client", "llama-cpp-python loop"]:
                if (w, engine, n) not in times:
                    continue
                t = med((w, engine, n))
                ratio = t / statistics.median(base) if base else float("nan")
                lines.append(f"| {engine} | {n} | {t:.2f} | {spread((w, engine, n))} | {q / t:.2f} | "
                             f"{workload['prompt_tokens_total'] / t:.0f} | {gen / t:.1f} | {ratio:.2f}x |")
        lines.append("")
        checks = []
        for n in parallel:
            d = med((w, "docent-eval", n))
            if (w, "llama-batched-bench", n) in times:
                b = med((w, "llama-batched-bench", n))
                checks.append(f"N={n}: docent-eval / batched-bench = {d / b:.3f} (target <= 1.05)")
            if (w, "llama-server + client", n) in times:
                sv = med((w, "llama-server + client", n))
                checks.append(f"N={n}: server / docent-eval = {sv / d:.3f} (target >= 1.0{', 1.2 here' if w == 1 else ''})")
            if (w, "docent-eval, no store/sampler", n) in times:
                nd = med((w, "docent-eval, no store/sampler", n))
                checks.append(f"N={n}: store + sampler, wall-time A/B = {100 * (d - nd) / nd:+.1f} % (target <= 2 %; "
                              "noise, see the ranges)")
        if (w, "llama-cpp-python loop", 1) in times:
            p = med((w, "llama-cpp-python loop", 1))
            best_n = min(parallel, key=lambda n: med((w, "docent-eval", n)))
            checks.append(f"llama-cpp-python loop / best docent-eval (N={best_n}) = {p / med((w, 'docent-eval', best_n)):.2f} "
                          "(target >= 1.3)")
        if (w, "docent-eval", 8) in times and (w, "docent-eval", 1) in times:
            r = med((w, "docent-eval", 1)) / med((w, "docent-eval", 8))
            checks.append(f"docent-eval --parallel 8 / --parallel 1 speed = {r:.2f} (target >= 1.3)")
        lines += ["Ratios:", ""] + [f"- {c}" for c in checks] + [""]

        cost = [(n, recording_cpu[(name, n, False)]) for n in parallel if (name, n, False) in recording_cpu]
        if cost:
            lines += ["Recording cost measured inside docent-eval (CPU time of the recorder thread: commits, fsync, "
                      "memory probes; plus the decode thread's time on each finished answer: scoring, progress, "
                      "hand-over), median over repetitions:", "",
                      "| N | recorder thread ms CPU | decode thread ms | % of the decode loop |", "|---:|---:|---:|---:|"]
            for n, samples in cost:
                rec = statistics.median(x[0] for x in samples)
                dec = statistics.median(x[1] for x in samples)
                pct = statistics.median(100 * (x[0] + x[1]) / (1000 * x[2]) for x in samples)
                lines.append(f"| {n} | {rec:.1f} | {dec:.2f} | {pct:.3f} |")
            lines.append("")
        rates = [(n, batched_rates[(name, n)]) for n in parallel if (name, n) in batched_rates]
        if rates:
            lines += ["llama-batched-bench's own speeds (median of its rounds): how much this CPU gains from batching.", "",
                      "| N | prompt tok/s | generation tok/s | generation vs N=1 |", "|---:|---:|---:|---:|"]
            tg1 = statistics.median(x[1] for x in rates[0][1]) if rates[0][0] == 1 else None
            for n, samples in rates:
                pp = statistics.median(x[0] for x in samples)
                tg = statistics.median(x[1] for x in samples)
                lines.append(f"| {n} | {pp:.0f} | {tg:.1f} | {f'{tg / tg1:.2f}x' if tg1 else '–'} |")
            lines.append("")
        if name in docent_prefix:
            shared = docent_prefix[name]
            lengths = [p["prompt_tokens"] for p in workload["prompts"]]
            computed = sum(lengths) - sum(min(shared, length - 1) for length in lengths) + shared if shared else sum(lengths)
            lines += [f"Prompt tokens docent-eval computed: {computed} of {sum(lengths)} (shared prefix of {shared} tokens "
                      "prefilled once per run and copied into each sequence), at every N.", ""]
            if rates and rates[0][0] == 1:
                # The most batching can gain on this CPU over a one-at-a-time loop that computes the
                # same prompt tokens (the Python loop and llama-server also reuse a shared prefix
                # from the previous request), from llama-batched-bench's own prefill and
                # generation speeds at N=1 and at N.
                pp1 = statistics.median(x[0] for x in rates[0][1])
                bounds = []
                for n, samples in rates:
                    ppn = statistics.median(x[0] for x in samples)
                    tgn = statistics.median(x[1] for x in samples)
                    bounds.append((n, (computed / pp1 + gen / tg1) / (computed / ppn + gen / tgn)))
                best_n, best = max(bounds, key=lambda b: b[1])
                lines += [f"Ceiling of batching here, from those speeds: computing {computed} prompt tokens and "
                          f"generating {gen} tokens is at most {best:.2f}x faster with N={best_n} than one "
                          "sequence at a time, for any engine (" + ", ".join(f"N={n}: {b:.2f}x" for n, b in bounds) + ").", ""]
        reuse = [(n, server_prompt[(name, n)]) for n in parallel if (name, n) in server_prompt]
        if reuse:
            lines += ["Prompt tokens llama-server actually computed (its `timings.prompt_n`; the rest came from its "
                      "per-slot prompt cache): " + ", ".join(
                          f"N={n}: {statistics.median(x[0] for x in samples):.0f} of {samples[0][1]}" for n, samples in reuse), ""]
    if same is not None:
        lines += [f"Greedy answers byte-identical between `--parallel 1` and `--parallel 8` "
                  f"(all {total} bundled questions, {args.max_tokens} max tokens): **{same}/{total}**.", ""]
    lines += ["## Every measurement, in the order taken", "",
              "| rep | workload | engine | N | s | CPU steal % |", "|---:|---|---|---:|---:|---:|"]
    lines += [f"| {rep} | {wl} | {engine} | {n} | {sec:.2f} | {steal:.1f} |" for rep, wl, engine, n, sec, steal in history]
    lines.append("")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
