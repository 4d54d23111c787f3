"""Benchmark: is `make demo` steady under load, and which llama.cpp settings make it so.

Speed is measured only as ratios within one run, with the machine's 1-minute load average recorded beside
every time: the same work runs idle (whatever else the machine is doing) and then with ONE core kept busy by a
background process (`python -c 'while True: pass'`), and "ratio" is busy seconds / idle seconds.

`--servers`: the llama.cpp server settings. For each setting a real llama.cpp server (the `xllamacpp` wheel, the
embedded SmolLM2-135M Q4_1 GGUF, one slot, no prompt cache: the distill stage's server) answers the same fixed
requests: m1's distillation prompt on the first `--questions` demo questions, greedy, `--tokens` new tokens,
4 in flight (the distill stage's client). Settings (`m1.serve.start_server` keywords):

* `old`: one process on every core, llama.cpp's waiting (libgomp spins ~300k times at each barrier): what the
  project ran before;
* `new`: `replicas="auto"` single-threaded processes (one per core), `spin=False`: the profiles' settings;
* `all-cores-sleep`: one process on every core, `spin=False` (`OMP_WAIT_POLICY=PASSIVE`): the waiting alone;
* `one-thread`: one single-threaded process (no barriers at all).

Requests are spread over a setting's processes as `m1.client.ChatClient` does (request i to process i mod n).

A run that does not finish within `--deadline` seconds is reported with the requests it finished (a collapse).
`same_texts` says whether every setting returned exactly the same answers (thread count and waiting must
never change an output).

`--invariance`: does a cached prompt prefix change the answer? One single-threaded llama.cpp server with a prompt
cache, flash attention on and off, asked for the first-token log-probabilities (top 5) of the domain classifier's
prompt (m1's rubric first, ~4,100 tokens) for a demo question: computed whole (nothing cached), after another
question (the rubric cached, the question computed as a batch), and again (all but the last token cached).
`whole_equals_cached_rubric` true means the label cannot depend on the order of the requests.

`--demo` (the default): `m1 reproduce --profile tiny` in a fresh work dir, with a fresh `M1_CACHE`, `M1_RUNS`
and `M1_FIGURES` in a temporary folder (so nothing of the checkout is read from a warm cache or overwritten),
idle and then with one core busy. Per-stage seconds come from the run's `timings.json` (what `m1 reproduce`
writes; kernel start, imports and server start-up are inside each stage's time), plus the total wall time
including the `m1` process start. `--until STAGE` runs a cheaper prefix of the pipeline.

    python bench/demo_load.py --servers --quick      # ~2 min at low load
    python bench/demo_load.py --demo --until distill # merge, dedup, distill, idle and busy
    python bench/demo_load.py --demo                 # the full demo twice (~20 min idle)

Writes (merging into) `bench/results/demo_load.json`: keys `servers`, `invariance` and/or `demo`, each with the
1-minute load average when it started (`load_at_start`) and `"loaded": true` when that exceeded 1.5 (the machine
was busy with other work: ratios under load, not idle figures); the top-level `loaded` is true when any section
is. SmolLM2-135M is at chance on
medical questions: this measures the machinery's speed, not medicine.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "demo_load.json"
SETTINGS = {   # name -> start_servers keywords
    "old": dict(threads=None, spin=True, replicas=1),
    "new": dict(threads=1, spin=False, replicas="auto"),
    "all-cores-sleep": dict(threads=None, spin=False, replicas=1),
    "one-thread": dict(threads=1, spin=False, replicas=1),
}


def load() -> float:
    return round(os.getloadavg()[0], 2)


class BusyCore:
    "One core kept busy by a child process for the duration of a `with` block."
    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait()


def ask_all(srvs: list, msgs: list, tokens: int, deadline: float, concurrency: int = 4) -> dict:
    "Send every request (greedy, `tokens` new tokens; request i to server i mod n), `concurrency` in flight; stop waiting after `deadline` s."
    import urllib.request

    def one(i, m):
        srv = srvs[i % len(srvs)]
        body = json.dumps({"model": srv.model, "messages": m, "max_tokens": tokens, "temperature": 0.0,
                           "seed": 0}).encode()
        req = urllib.request.Request(srv.base_url + "/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=deadline + 60) as r:
            return json.loads(r.read())

    t0, la0 = time.time(), load()
    ex = cf.ThreadPoolExecutor(concurrency)
    futs = [ex.submit(one, i, m) for i, m in enumerate(msgs)]
    done, _ = cf.wait(futs, timeout=deadline)
    secs = time.time() - t0
    ex.shutdown(wait=False, cancel_futures=True)
    res = [f.result() for f in futs if f in done and f.exception() is None]
    toks = sum(r["usage"]["completion_tokens"] for r in res)
    return {"seconds": round(secs, 2), "finished": len(res), "requests": len(msgs), "tokens": toks,
            "tok_s": round(toks / secs, 2), "load_before": la0, "load_after": load(),
            "texts": [r["choices"][0]["message"]["content"] for r in res] if len(res) == len(msgs) else None}


def servers(questions: int, tokens: int, deadline: float, rounds: int, names: list[str]) -> dict:
    "Each setting idle and with one busy core, settings interleaved, `rounds` times."
    from m1.data import load_demo, render_prompt
    from m1.serve import resolve_threads, start_servers
    msgs = [[{"role": "user", "content": render_prompt(r, "prefix")}] for r in load_demo(limit=questions)]
    runs, texts = [], {}
    for rnd in range(rounds):
        for name in names:
            kw = SETTINGS[name]
            threads = resolve_threads(kw["threads"]) or os.cpu_count()
            srvs = start_servers(backend="xllamacpp", parallel=1, prompt_cache=False, ctx=1024, **kw)
            try:
                for i in range(len(srvs)):
                    ask_all(srvs[i:i + 1], msgs[:1], 4, deadline)   # warm-up
                for cond in ("idle", "busy"):
                    if cond == "busy":
                        with BusyCore():
                            r = ask_all(srvs, msgs, tokens, deadline)
                    else:
                        r = ask_all(srvs, msgs, tokens, deadline)
                    t = r.pop("texts")
                    if t is not None:
                        texts.setdefault(name, t)
                        r["same_texts_as_first"] = t == next(iter(texts.values()))
                    runs.append({"round": rnd, "setting": name, "processes": len(srvs), "threads": threads,
                                 "spin": kw["spin"], "condition": cond, **r})
                    print(json.dumps(runs[-1]), flush=True)
            finally:
                for s in srvs:
                    s.stop()
    summary = {}
    for name in names:
        mine = [r for r in runs if r["setting"] == name]
        idle = [r for r in mine if r["condition"] == "idle"]
        busy = [r for r in mine if r["condition"] == "busy"]
        summary[name] = {
            "idle_seconds": [r["seconds"] for r in idle], "busy_seconds": [r["seconds"] for r in busy],
            "idle_tok_s": [r["tok_s"] for r in idle], "busy_tok_s": [r["tok_s"] for r in busy],
            "unfinished_runs": sum(r["finished"] < r["requests"] for r in mine),
            "ratio_busy_idle": [round(b["seconds"] / i["seconds"], 2) for i, b in zip(idle, busy)],
            "load": [r["load_before"] for r in mine]}
    return {"questions": questions, "tokens": tokens, "deadline_seconds": deadline, "rounds": rounds,
            "cores": os.cpu_count(), "settings": {n: SETTINGS[n] for n in names}, "summary": summary,
            "same_texts": len({json.dumps(t) for t in texts.values()}) == 1 if texts else None,
            "settings_with_all_texts": sorted(texts), "runs": runs}


def invariance(questions: int = 4) -> dict:
    "First-token log-probabilities of one classifier prompt computed whole vs after a cached prefix, flash attention on/off."
    import urllib.request
    from m1.data import load_demo
    from m1.domains import classifier_messages, load_qualifiers
    from m1.serve import start_server
    quals, rows = load_qualifiers(), list(load_demo(limit=10 * questions))[::10][:questions]

    def top(srv, row):
        body = json.dumps({"model": srv.model, "messages": classifier_messages(row, quals, rubric_first=True),
                           "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": 5}).encode()
        req = urllib.request.Request(srv.base_url + "/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=1800) as r:
            res = json.loads(r.read())
        return [(t["token"], t["logprob"]) for t in res["choices"][0]["logprobs"]["content"][0]["top_logprobs"]]

    out = {}
    for fa in (True, False):
        la0 = load()
        with start_server(backend="xllamacpp", threads=1, parallel=1, prompt_cache=True, ctx=8192, flash_attn=fa) as srv:
            t0 = time.time()
            whole = top(srv, rows[0])
            whole_s = time.time() - t0
            top(srv, rows[1])
            after = top(srv, rows[0])
            again = top(srv, rows[0])
            for r in rows[2:]:
                top(srv, r)
            after2 = top(srv, rows[0])
        out[f"flash_attn_{'on' if fa else 'off'}"] = {
            "whole_equals_cached_rubric": whole == after, "cached_rubric_repeatable": after == after2,
            "whole_equals_last_token_only": whole == again, "whole_prompt_seconds": round(whole_s, 1),
            "top2_whole": whole[:2], "top2_cached_rubric": after[:2], "load_before": la0, "load_after": load()}
        print(json.dumps(out), flush=True)
    return out


def reproduce_once(until: str | None, busy: bool, keep: Path | None) -> dict:
    "`m1 reproduce --profile tiny` in fresh folders (work, M1_CACHE, M1_RUNS, M1_FIGURES); per-stage seconds."
    tmp = Path(tempfile.mkdtemp(prefix="m1-demo-load-", dir=keep))
    env = {**os.environ, "M1_CACHE": str(tmp / "cache"), "M1_RUNS": str(tmp / "runs"),
           "M1_FIGURES": str(tmp / "figures")}
    exe = Path(sys.executable).parent / "m1"
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "m1.cli"]),
           "reproduce", "--profile", "tiny", "--work", str(tmp / "work"), "--run-id", "demo"]
    if until:
        cmd += ["--until", until]
    la0, t0 = load(), time.time()
    if busy:
        with BusyCore():
            p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    else:
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode:
        raise SystemExit(f"m1 reproduce failed (exit {p.returncode}); folder {tmp}:\n{p.stderr[-3000:]}")
    timings = json.loads((tmp / "runs" / "demo" / "timings.json").read_text())
    if keep is None:                      # the fresh cache holds a converted model: do not leave it in /tmp
        shutil.rmtree(tmp, ignore_errors=True)
    return {"condition": "busy" if busy else "idle", "wall_seconds": round(wall, 1),
            "reproduce_seconds": timings["total_seconds"],
            "stages": {s: t["seconds"] for s, t in timings["stages"].items()},
            "load_before": la0, "load_after": load(), "folder": str(tmp) if keep is not None else None}


def demo(until: str | None, keep: Path | None) -> dict:
    runs = []
    for busy in (False, True):
        runs.append(reproduce_once(until, busy, keep))
        print(json.dumps(runs[-1]), flush=True)
    idle, busy = runs
    return {"command": "m1 reproduce --profile tiny" + (f" --until {until}" if until else ""), "until": until,
            "note": "idle = no busy core added by this script; other work on the machine shows in the load averages",
            "cores": os.cpu_count(), "runs": runs,
            "ratio_busy_idle": round(busy["wall_seconds"] / idle["wall_seconds"], 2),
            "stage_ratios": {s: round(busy["stages"][s] / idle["stages"][s], 2) for s in idle["stages"]
                             if idle["stages"][s]},
            "idle_under_8_min": idle["wall_seconds"] < 480 if until is None else None,
            "busy_within_1_3x": busy["wall_seconds"] <= 1.3 * idle["wall_seconds"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", action="store_true", help="measure the llama.cpp server settings")
    ap.add_argument("--invariance", action="store_true", help="cached prefix vs whole prompt, flash attention on/off")
    ap.add_argument("--demo", action="store_true", help="run m1 reproduce --profile tiny idle and busy (default)")
    ap.add_argument("--until", default=None, help="--demo: stop after this stage (a cheaper run)")
    ap.add_argument("--quick", action="store_true", help="--servers: 6 questions, 24 tokens, one round")
    ap.add_argument("--questions", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=120.0, help="--servers: seconds before a run counts as collapsed")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"--servers: comma-separated, of {list(SETTINGS)}")
    ap.add_argument("--keep", default=None, help="--demo: keep the run folders under this folder (default: temporary, removed)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.settings.split(",") if n.strip()]
    if bad := [n for n in names if n not in SETTINGS]:
        raise SystemExit(f"--settings: unknown {bad}; choose from {list(SETTINGS)}")
    if a.quick:
        a.questions, a.tokens, a.rounds = 6, 24, 1
    out = Path(a.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    t0 = time.time()

    def start() -> float:
        la0 = load()
        if la0 > 1.5:
            print(f"WARNING: load average {la0} > 1.5 at start: the machine is busy; not idle figures", flush=True)
        return la0

    def stamp(d: dict, la0: float) -> dict:
        return {**d, "load_at_start": la0, "loaded": la0 > 1.5}
    if a.servers:
        la0 = start()
        result["servers"] = stamp({**servers(a.questions, a.tokens, a.deadline, a.rounds, names),
                                   "command": "python bench/demo_load.py " + " ".join(argv or sys.argv[1:]),
                                   "seconds": round(time.time() - t0, 1)}, la0)
    if a.invariance:
        la0 = start()
        result["invariance"] = stamp({**invariance(), "command": "python bench/demo_load.py --invariance"}, la0)
    if a.demo or not (a.servers or a.invariance):
        la0 = start()
        result["demo"] = stamp({**demo(a.until, Path(a.keep) if a.keep else None),
                                "command_line": "python bench/demo_load.py " + " ".join(argv or sys.argv[1:])}, la0)
    result["loaded"] = any(v.get("loaded", True) for k, v in result.items() if isinstance(v, dict))   # any section
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
