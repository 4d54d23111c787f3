"""Benchmark: decoding throughput of the default CPU engine versus `model.generate` and a llama.cpp server.

Measured in ONE run, on the same real questions (`../shared/data/eval`, via `m1.data.load_eval`), the same
prompt token ids and the same number of new tokens per question (stop markers masked: `min_new` /
`min_new_tokens`, so nothing stops early), greedy, with the embedded SmolLM2-135M-Instruct and the same thread
count everywhere:

* `naive_tok_s`: `model.generate` one question at a time (batch 1, fp32), as m1's README answers questions;
* `engine_tok_s`: the default in-process engine (`m1.engine.make_backend(kind="transformers")`: its default
  batch size and `quantize`), all questions in one `continue_` call; `engine_variants` has fp32 and int8;
* `llamacpp_tok_s`: a llama.cpp server (`m1.serve.start_server(backend="xllamacpp")`, the embedded model's
  Q4_1 GGUF) driven by `m1.client.OpenAIBackend` (token-id prompts, concurrent requests) with 1 slot and N
  slots, each with spinning worker threads (llama.cpp's own default, fastest on an idle machine) and with
  sleeping ones (`spin=False`, m1's server default, steady under load); the best setting is the headline,
  every setting is in `llamacpp`;
* `vs_llamacpp` = engine / llama.cpp (goal >= 1), `speedup` = engine / naive (goal >= 5);
* `matmul_peak_gflops`: a large fp32 matmul with torch threads = all cores, in this run; the load average
  before and after each part. A run that starts with a 1-minute load average above 1.5 is flagged
  `"loaded": true` with a warning: its numbers are ratios under load, never idle numbers.
* `engine_equals_generate`: the fp32 engine's batched tokens equal `generate`'s one-at-a-time tokens;
  the int8 path is not token-exact (its accuracy: `bench/quantized_accuracy.py`).

Throughput is tokens generated / wall time of the whole call (prefill included) on every side.

    python bench/throughput.py --quick   # < 90 s on an idle 2-core machine
    python bench/throughput.py           # full mode -> bench/results/throughput.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "throughput.json"
LOADED = 1.5


def load() -> float:
    return round(os.getloadavg()[0], 2)


def matmul_peak(threads: int, n: int = 2048, reps: int = 5) -> float:
    "Measured fp32 GFLOP/s of an n x n matmul (best of `reps`) with `threads` torch threads."
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def timed(fn) -> tuple[object, dict]:
    l0, t0 = load(), time.perf_counter()
    out = fn()
    return out, {"seconds": round(time.perf_counter() - t0, 2), "load_before": l0, "load_after": load()}


def naive_generate(model, tok, pids, new):
    import torch
    outs = []
    with torch.inference_mode():
        for p in pids:
            x = torch.tensor([p])
            o = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, eos_token_id=[1, 2], pad_token_id=tok.pad_token_id)
            outs.append(o[0, len(p):].tolist())
    return outs


def llamacpp(pids, new, slots, threads, tok, spin) -> tuple[list, dict]:
    "One llama.cpp server with `slots` parallel slots (`spin`: busy-waiting threads); `continue_` of every prompt."
    from m1.client import OpenAIBackend
    from m1.serve import start_server
    ctx = max(map(len, pids)) + new + 16
    with start_server(backend="xllamacpp", threads=threads, parallel=slots, ctx=ctx, spin=spin) as srv:
        be = OpenAIBackend(srv.base_url, srv.model, tok, concurrency=slots)
        be.continue_([pids[0]], 4, min_new=4)          # probe what the server accepts (min_tokens, ids), untimed
        conts, t = timed(lambda: be.continue_(pids, new, min_new=new))
    return [c.tokens for c in conts], {**t, "slots": slots, "spin": spin, "via": conts[0].via}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small run (< 90 s on an idle 2-core machine)")
    ap.add_argument("--n", type=int, default=None, help="questions (engine and llama.cpp)")
    ap.add_argument("--n-naive", type=int, default=None, help="questions for the one-at-a-time baseline")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per question")
    ap.add_argument("--slots", default=None, help="llama.cpp parallel-slot settings, e.g. 1,8 ('' to skip)")
    ap.add_argument("--spin", default="on,off", help="llama.cpp thread waiting to try: on (spin, its default), off (sleep)")
    ap.add_argument("--threads", default="auto", help='threads for every side: an int or "auto" (cores not already busy)')
    ap.add_argument("--set", default="MedMCQA_validation")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    n = a.n or (16 if a.quick else 32)
    n_naive = a.n_naive or (2 if a.quick else 4)
    new = a.tokens or (32 if a.quick else 128)
    slots = [int(s) for s in (a.slots if a.slots is not None else ("1,4" if a.quick else "1,4,8")).split(",") if s]
    spin_arg = "on" if a.quick and a.spin == "on,off" else a.spin
    if not set(x.strip() for x in spin_arg.split(",")) <= {"on", "off"}:
        ap.error(f"--spin: {a.spin!r} is not a comma list of on/off")
    spins = [x.strip() == "on" for x in spin_arg.split(",")]

    load_start = os.getloadavg()
    loaded = load_start[0] > LOADED
    if loaded:
        msg = (f"WARNING: load average {load_start[0]:.2f} > {LOADED} at start: the machine is busy; these numbers "
               "are ratios under load, not idle throughput")
        print(msg, flush=True)
    import torch
    from m1.backend import chat_prompt_ids
    from m1.core import write_json
    from m1.data import load_eval, render_prompt
    from m1.engine import TransformersBackend, make_backend, set_threads
    from m1.models import load_model
    threads = set_threads(a.threads if a.threads == "auto" else int(a.threads))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    peak = matmul_peak(cores)
    model, tok = load_model()
    rows = list(load_eval(a.set, limit=n))
    pids = [chat_prompt_ids(tok, render_prompt(r)) for r in rows]
    made = n * new

    default = make_backend(kind="transformers", threads=threads)
    variants = {}                                       # the default engine first, then the other precision
    for q in dict.fromkeys([default.quantize, "none", "int8"]):
        be = default if q == default.quantize else TransformersBackend(model, tok, batch_size=default.batch_size,
                                                                       threads=threads, quantize=q)
        conts, t = timed(lambda: be.continue_(pids, new, min_new=new))
        assert all(len(c.tokens) == new for c in conts), "every row must decode exactly --tokens tokens"
        variants["fp32" if q == "none" else q] = {**t, "tok_s": round(made / t["seconds"], 2),
                                                  "tokens": [c.tokens for c in conts]}
    name = "fp32" if default.quantize == "none" else default.quantize
    engine = variants[name]["tok_s"]

    llama = {}
    for spin in spins:
        for s in slots:
            toks, t = llamacpp(pids, new, s, threads, tok, spin)
            assert all(len(x) == new for x in toks), "llama.cpp must decode exactly --tokens tokens per prompt"
            key = f"{s} slot{'s' if s > 1 else ''}, {'spin' if spin else 'sleep'}"
            llama[key] = {**t, "tok_s": round(made / t["seconds"], 2)}
            print(f"llama.cpp {key}: {llama[key]['tok_s']} tok/s (load {t['load_before']})", flush=True)
    best = max(llama.values(), key=lambda d: d["tok_s"]) if llama else None

    naive_out, t_naive = timed(lambda: naive_generate(model, tok, pids[:n_naive], new))
    naive = n_naive * new / t_naive["seconds"]
    eq = {k: f"{sum(o == c for o, c in zip(naive_out, v['tokens']))}/{n_naive}" for k, v in variants.items()}
    agree = sum(x == y for x, y in zip(variants["fp32"]["tokens"], variants["int8"]["tokens"]))

    load_end = os.getloadavg()
    res = {
        "model": "smollm2-135m-instruct (greedy; llama.cpp: its Q4_1 GGUF)", "set": a.set, "questions": n,
        "questions_naive": n_naive, "new_tokens": new, "threads": threads, "cores": cores,
        "engine_default": {"batch_size": default.batch_size, "quantize": default.quantize},
        "mean_prompt_tokens": round(sum(map(len, pids)) / len(pids), 1),
        "naive_tok_s": round(naive, 2), "engine_tok_s": engine,
        "llamacpp_tok_s": best["tok_s"] if best else None, "llamacpp_best_slots": best["slots"] if best else None,
        "llamacpp_best_spin": best["spin"] if best else None,
        "vs_llamacpp": round(engine / best["tok_s"], 3) if best else None,
        "speedup": round(engine / naive, 2),
        "engine_variants": {k: {x: y for x, y in v.items() if x != "tokens"} for k, v in variants.items()},
        "llamacpp": llama, "naive": t_naive,
        "engine_equals_generate": eq["fp32"], "int8_equals_generate": eq["int8"],
        "int8_equals_fp32_rows": f"{agree}/{n}",
        "matmul_peak_gflops": round(peak, 1), "matmul_peak_threads": cores,
        "load_avg_start": [round(x, 2) for x in load_start], "load_avg_end": [round(x, 2) for x in load_end],
        "loaded": loaded, "mode": "quick" if a.quick else "full",
        "command": "python bench/throughput.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
    }
    if loaded:
        res["warning"] = (f"load average {load_start[0]:.2f} > {LOADED} at start (busy machine): ratios under load, "
                          "not idle numbers")
    write_json(a.out, res)
    v = res["engine_variants"]
    print(f"naive generate {res['naive_tok_s']} tok/s; engine fp32 {v['fp32']['tok_s']}, int8 {v['int8']['tok_s']} "
          f"tok/s (batch {default.batch_size}, {threads} threads); fp32 matmul peak {res['matmul_peak_gflops']} "
          f"GFLOP/s; fp32 engine = generate on {eq['fp32']}; int8 = fp32 on {agree}/{n} rows")
    tail = " (LOADED: ratios under load)" if loaded else ""
    ll = (f"{res['vs_llamacpp']}x llama.cpp ({res['llamacpp_tok_s']} tok/s, {res['llamacpp_best_slots']} slots, "
          f"{'spin' if res['llamacpp_best_spin'] else 'sleep'})" if best else "llama.cpp not run")
    print(f"engine ({name}) {engine} tok/s = {ll}, {res['speedup']}x naive generate "
          f"(goals >= 1 and >= 5); load {load_start[0]:.2f} -> {load_end[0]:.2f}{tail}")
    return res


if __name__ == "__main__":
    main()
