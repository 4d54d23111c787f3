"""Benchmark: the distill stage under injected faults and repeated SIGKILLs, and client concurrency.

Reliability. A real llama.cpp server (the `xllamacpp` wheel) serves the embedded SmolLM2-135M on loopback
with one slot and no prompt cache, so that greedy and seeded answers do not depend on what ran alongside
(llama.cpp's batching and prompt-state reuse flip near-ties otherwise). An uninterrupted, fault-free
`m1.distill.distill_run` gives the reference dataset. Then the same configuration runs in a subprocess that
talks to the server through `FaultProxy` (tests/fault_servers.py) (429 with Retry-After, 500, timeouts, truncated bodies,
broken JSON, dropped connections, on a seeded schedule) and is SIGKILLed `--kills` times after a seeded
number of new answers, then run to completion. Reported:

* `lost`: expected (question, model, sample) rows missing from the final dataset, plus answers cached before
  a kill that did not survive into it;
* `duplicated`: repeated rows in the final dataset, repeated keys in the request cache, and answers that a
  resumed run asked for again although they were already cached;
* `equal_to_reference`: the final dataset equals the fault-free one, row for row.

Throughput. The same server model with 4 slots (batched decoding): the same requests sent one at a time, then
4 in flight (`ChatClient(concurrency=4)`); `speedup_vs_sequential` is the ratio of wall times. On a 2-core CPU
the local server is compute-bound, so this ratio is about 1 (below 1 when other work loads the machine). The
client's concurrency pays where requests wait on the network, as with a remote teacher API:
`speedup_vs_sequential_latency_bound` sends as many short requests (a one-line prompt, 2 tokens) through a proxy
that adds a fixed `latency_bound_added_seconds` to each one.

Questions are real MedQA training questions from `../shared/data` (`m1.data.load_pool("medqa_train")`).
SmolLM2-135M is at chance on them: this measures the machinery, not medicine.

    python bench/distill.py --quick     # < 60 s on an idle 2-core machine
    python bench/distill.py             # full mode (a few minutes) -> bench/results/distill.json
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))   # FaultProxy is a test tool (tests/fault_servers.py)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "distill.json"
JOB = "import json, sys; from m1.distill import distill_run; distill_run(sys.argv[1], json.loads(sys.argv[2]), progress=False)"


def row_key(r: dict) -> tuple:
    return (r["id"], r["model"], r["sample"])


def reliability(n_questions: int, kills: int, max_tokens: int, fault_rate: float, seed: int) -> dict:
    from fault_servers import FaultProxy
    from m1.serve import start_server
    from m1.core import JsonlStore, load_stage, save_stage
    from m1.data import load_pool
    from m1.distill import cache_file, distill_run, model_calls

    questions = load_pool("medqa_train").select(range(n_questions))
    scratch = Path(tempfile.mkdtemp(prefix="m1-bench-distill-"))
    ref_dir, run_dir = scratch / "ref", scratch / "run"
    for d in (ref_dir, run_dir):
        save_stage(questions, "dedup", {"note": f"{n_questions} MedQA train questions"}, root=d)
    rng = random.Random(seed)
    kinds = ["429", "500", "timeout", "truncate", "bad_json", "drop"]
    weights = {"429": 1, "500": 1, "timeout": 0.5, "truncate": 1, "bad_json": 1, "drop": 1}
    plan = {k: fault_rate * w / sum(weights.values()) for k, w in weights.items()}
    with start_server(backend="xllamacpp", parallel=1, prompt_cache=False, ctx=1024) as srv:
        cfg = {"teachers": ["sampled"], "small_models": ["greedy"], "seed": 7, "concurrency": 3,
               "models": {"sampled": {"model": srv.model, "temperature": 0.7, "samples": 2, "max_tokens": max_tokens},
                          "greedy": {"model": srv.model, "temperature": 0.0, "max_tokens": max_tokens}},
               "max_retries": 12, "timeout": 30, "server": {"backend": "external", "base_urls": [srv.base_url]}}
        expected = n_questions * sum(c.samples for c in model_calls(cfg, cfg["small_models"]))
        t0 = time.time()
        ref, _ = distill_run(ref_dir, cfg, progress=False)
        t_ref = time.time() - t0
        with FaultProxy(srv.base_url, plan, seed=seed, retry_after=0.5, hang=35) as px:
            fcfg = {**cfg, "server": {"backend": "external", "base_urls": [px.base_url]}}
            store = JsonlStore(cache_file(fcfg, run_dir))
            done_kills, cached_before_kills = 0, set()
            t0 = time.time()
            for k in range(kills):
                have = len(store)
                if have >= expected - 1:
                    break
                target = have + rng.randint(1, max(1, (expected - have) // (kills - k + 1)))
                p = subprocess.Popen([sys.executable, "-c", JOB, str(run_dir), json.dumps(fcfg)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                while len(store) < target and p.poll() is None:
                    time.sleep(0.05)
                if p.poll() is None:
                    p.send_signal(signal.SIGKILL)
                    done_kills += 1
                p.wait()
                cached_before_kills |= {r["key"] for r in store.read()}
            out, report = distill_run(run_dir, fcfg, progress=False)
            t_faulty = time.time() - t0
            injected, proxied = dict(px.injected), px.requests
        final_keys = [row_key(r) for r in out]
        expected_keys = {row_key(r) for r in ref}
        cache_keys = [r["key"] for r in store.read()]
        # every answer is appended to the cache when it arrives, so an answer asked for twice (by any of the
        # killed jobs or the last run) shows up as a repeated key there
        lost = len(expected_keys - set(final_keys)) + len(cached_before_kills - set(cache_keys))
        duplicated = (len(final_keys) - len(set(final_keys))) + (len(cache_keys) - len(set(cache_keys)))
        resent = sum(m["sent"] for m in report["models"].values()) - (expected - len(cached_before_kills))
        return {"questions": n_questions, "rows": len(out), "expected_rows": expected,
                "requests": proxied, "faults_injected": sum(injected.values()), "faults_by_kind": injected,
                "kills": done_kills, "lost": lost, "duplicated": duplicated,
                "equal_to_reference": out.to_list() == ref.to_list(),
                "resent_after_resume": resent, "retries_last_run": sum(m["retries"] for m in report["models"].values()),
                "reference_seconds": round(t_ref, 1), "faulty_seconds": round(t_faulty, 1),
                "fault_plan": {k: round(v, 3) for k, v in plan.items()}, "max_tokens": max_tokens,
                "kinds": kinds}


def throughput(n_requests: int, max_tokens: int, concurrency: int = 4, latency: float = 1.0) -> dict:
    from fault_servers import FaultProxy
    from m1.client import ChatClient
    from m1.serve import start_server
    from m1.data import load_pool, render_prompt
    qs = load_pool("medqa_train").select(range(100, 100 + n_requests))
    prompts = [render_prompt(r, "prefix") for r in qs]
    with start_server(backend="xllamacpp", parallel=concurrency, prompt_cache=False, ctx=1024) as srv:
        ChatClient.for_server(srv, progress=False).chat(["warm up"], temperature=0.0, max_tokens=2)
        times, toks = {}, {}
        for conc in (1, concurrency):
            c = ChatClient.for_server(srv, concurrency=conc, progress=False)   # no cache: every request is sent
            t0 = time.time()
            res = c.chat(prompts, temperature=0.0, max_tokens=max_tokens)
            times[conc] = time.time() - t0
            toks[conc] = sum(r["usage"]["completion_tokens"] for r in res)
        lat = {}
        with FaultProxy(srv.base_url, delay=latency) as px:     # the same server behind a remote-API latency
            for conc in (1, concurrency):
                c = ChatClient(px.base_url, srv.model, concurrency=conc, progress=False)
                t0 = time.time()        # short prompts: the added latency, not the CPU, dominates
                c.chat([f"Say hello ({i})." for i in range(n_requests)], temperature=0.0, max_tokens=2)
                lat[conc] = time.time() - t0
    return {"latency_bound_added_seconds": latency, "latency_bound_max_tokens": 2,
            "latency_bound_sequential_seconds": round(lat[1], 2),
            "latency_bound_concurrent_seconds": round(lat[concurrency], 2),
            "speedup_vs_sequential_latency_bound": round(lat[1] / lat[concurrency], 2),
            "throughput_requests": n_requests, "throughput_max_tokens": max_tokens, "concurrency": concurrency,
            "sequential_seconds": round(times[1], 2), "concurrent_seconds": round(times[concurrency], 2),
            "completion_tokens": toks, "speedup_vs_sequential": round(times[1] / times[concurrency], 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small run (< 60 s on an idle machine)")
    ap.add_argument("--questions", type=int, help="questions in the reliability run")
    ap.add_argument("--kills", type=int, help="SIGKILLs of the distill job")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    n = a.questions or (2 if a.quick else 12)
    kills = a.kills if a.kills is not None else (1 if a.quick else 4)
    t0 = time.time()
    res = {"mode": "quick" if a.quick else "full", "machine": f"{__import__('os').cpu_count()} CPU cores",
           "model": "smollm2-135m-instruct (llama.cpp, Q4_1 GGUF, 1 thread per 2 cores)"}
    res.update(reliability(n, kills, max_tokens=4 if a.quick else 12, fault_rate=0.35, seed=a.seed))
    res.update(throughput(4 if a.quick else 12, max_tokens=16 if a.quick else 48))
    res["seconds"] = round(time.time() - t0, 1)
    res["command"] = "python bench/distill.py" + (" --quick" if a.quick else "")
    from m1.core import write_json
    write_json(a.out, res)
    print(json.dumps(res, indent=1))
    print(f"{res['requests']} requests, {res['faults_injected']} faults, {res['kills']} kills: lost {res['lost']}, "
          f"duplicated {res['duplicated']}, equal to reference {res['equal_to_reference']}; "
          f"concurrency {res['concurrency']} speedup {res['speedup_vs_sequential']}x local CPU server, "
          f"{res['speedup_vs_sequential_latency_bound']}x with {res['latency_bound_added_seconds']}s latency")


if __name__ == "__main__":
    main()
