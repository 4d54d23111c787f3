"""Benchmark of m1.dedup's near-duplicate search against m1's all-pairs method.

m1 deduplicated its pool with rapidfuzz `fuzz.ratio >= 95` on the prompt, calling `process.extract` for every
row against every row (O(n^2)). `m1.dedup.near_duplicates` finds the same pairs with MinHash-LSH candidates,
an exact character-count bound and a rapidfuzz check of every candidate. This script measures, on the same
rows:

* `seconds`: `near_duplicates(prompts, workers=2)` wall time (exact grouping, MinHash, LSH, bound, verify);
* `baseline_seconds`: m1's method, `process.extract(p, prompts, scorer=fuzz.ratio, score_cutoff=95)` per row
  (limit 5, as m1), timed on a random sample of rows and scaled to all rows, divided by 2 for a perfect
  2-process Pool (m1 used a multiprocessing Pool over all cores): an estimate, not a run;
* `recall`: of the true pairs (`fuzz.ratio >= 95`, from rapidfuzz's exact `process.cdist(..., scorer=fuzz.ratio,
  score_cutoff=95, workers=2)`) that involve a random sample of rows (the sample's full neighbourhoods
  against all rows), the share that `near_duplicates` reports (directly or through exact-copy groups);
  also the agreement of the keep/remove decision on the sampled rows (false removals are impossible by
  construction: every reported pair is verified).

Data: every question of ../shared/data (pool/ and eval/, ~39k), rendered as m1's prompt, and (full mode) a
200k pool derived from it by perturbed copies: typos (substitutions, insertions, deletions; 1 to 4% of the
question's characters), white-space changes and option order changes (two swapped or all shuffled), one or
more per copy, plus 5% exact copies. The derived pool is synthetic and says so in the JSON.

    .venv/bin/python bench/dedup.py --quick     # < 60 s: 15k derived rows
    .venv/bin/python bench/dedup.py             # full: 39k real rows and the 200k derived pool (minutes)
"""
from __future__ import annotations

import argparse
import os
import random
import string
import sys
import time
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("M1_DATA", str(ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from m1.core import write_json  # noqa: E402
from m1.data import EVAL_SETS, LETTERS, POOL_FILES, load_eval, load_pool  # noqa: E402
from m1.dedup import column, earliest_match, near_duplicates  # noqa: E402

CHARS = string.ascii_letters + "     ,.-"


def real_rows() -> list[tuple[str, list[str], str]]:
    "(question, options, source) of every question in ../shared/data (pool and eval)."
    rows = []
    for name in POOL_FILES:
        ds = load_pool(name, on_invalid="skip")
        rows += zip(column(ds, "question"), column(ds, "options"), [name] * len(ds))
    for name in EVAL_SETS:
        ds = load_eval(name)
        rows += zip(column(ds, "question"), column(ds, "options"), [name] * len(ds))
    return rows


def render(q: str, opts: list[str]) -> str:
    "m1's prompt (the same string as m1.data.format_question)."
    return q + "\n" + "\n".join(f"{L}. {o}" for L, o in zip(LETTERS, opts))


def char_edits(s: str, k: int, rng: random.Random) -> str:
    s = list(s)
    for _ in range(k):
        op = rng.randrange(3)
        if op == 1:
            s.insert(rng.randrange(len(s) + 1), rng.choice(CHARS))
        elif s:
            p = rng.randrange(len(s))
            if op == 0:
                s[p] = rng.choice(CHARS)
            else:
                del s[p]
    return "".join(s)


def white_space(s: str, rng: random.Random) -> str:
    sp = [i for i, c in enumerate(s) if c == " "]
    op = rng.randrange(4)
    if op == 0 and sp:
        i = rng.choice(sp); return s[:i] + "  " + s[i + 1:]
    if op == 1:
        return s + " "
    if op == 2 and sp:
        i = rng.choice(sp); return s[:i] + "\n" + s[i + 1:]
    return " " + s


def perturb(q: str, opts: list[str], rng: random.Random) -> tuple[str, list[str], list[str]]:
    "A perturbed copy: typos, white space, option order (one or more), or 5% of the time an exact copy."
    opts = list(opts)
    if rng.random() < 0.05:
        return q, opts, ["exact"]
    kinds = []
    while not kinds:
        kinds = [k for k, p in (("typos", .6), ("space", .5), ("order", .3)) if rng.random() < p]
    if "typos" in kinds:
        q = char_edits(q, rng.randint(1, max(1, round(0.04 * len(q)))), rng)
    if "space" in kinds:
        q = white_space(q, rng)
    if "order" in kinds and len(opts) > 1:
        if rng.random() < 0.5:
            i, j = rng.sample(range(len(opts)), 2); opts[i], opts[j] = opts[j], opts[i]
        else:
            rng.shuffle(opts)
    return q, opts, kinds


def derive(rows, n_total: int, seed: int) -> list[str]:
    "The real prompts followed by perturbed copies of random real rows, n_total prompts in all."
    rng = random.Random(seed)
    texts = [render(q, o) for q, o, _ in rows]
    while len(texts) < n_total:
        q, o, _ = rows[rng.randrange(len(rows))]
        texts.append(render(*perturb(q, o, rng)[:2]))
    return texts


def reference_pairs(texts: list[str], sample: np.ndarray, workers: int = 2) -> set[tuple[int, int]]:
    "Exact pairs (i < j, fuzz.ratio >= 95) that involve a sampled row: cdist of the sample against all rows."
    out = set()
    for s in range(0, len(sample), 100):
        part = sample[s:s + 100]
        M = process.cdist([texts[i] for i in part], texts, scorer=fuzz.ratio, score_cutoff=95, workers=workers,
                          dtype=np.uint8)
        for r, i in enumerate(part.tolist()):
            for j in np.flatnonzero(M[r]).tolist():
                if j != i:
                    out.add((min(i, j), max(i, j)))
    return out


def m1_seconds_per_row(texts: list[str], rows: np.ndarray) -> float:
    "m1's per-row search (process.extract with fuzz.ratio, score_cutoff 95, limit 5) on a few rows."
    t0 = time.perf_counter()
    for i in rows.tolist():
        process.extract(texts[i], texts, scorer=fuzz.ratio, score_cutoff=95, limit=5)
    return (time.perf_counter() - t0) / len(rows)


def run(name: str, texts: list[str], ref_sample: int, base_sample: int, seed: int, workers: int, note: str) -> dict:
    n = len(texts)
    print(f"[{name}] {n} prompts: near_duplicates ...", flush=True)
    t0 = time.perf_counter()
    stats: dict = {}
    group, pairs, scores = near_duplicates(texts, workers=workers, stats=stats)
    seconds = time.perf_counter() - t0
    removed = earliest_match(group, pairs) >= 0
    print(f"[{name}] {seconds:.1f}s, {int(removed.sum())} rows have an earlier near-duplicate; {stats}", flush=True)

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(ref_sample, n), replace=False))
    t0 = time.perf_counter()
    ref = reference_pairs(texts, sample, workers)
    t_ref = time.perf_counter() - t0
    found_pairs = {(int(a), int(b)) for a, b in pairs.tolist()}
    found = sum(1 for i, j in ref if group[i] == group[j] or (min(group[i], group[j]), max(group[i], group[j])) in found_pairs)
    recall = found / len(ref) if ref else 1.0
    exact_removed = np.zeros(n, bool)
    for i, j in ref:
        exact_removed[j] = True                                 # j has an earlier match i
    # decisions are only fully known for sampled rows (all their pairs are in the reference)
    agree = float((exact_removed[sample] == removed[sample]).mean())
    false_removals = int((removed[sample] & ~exact_removed[sample]).sum())
    print(f"[{name}] recall {recall:.4f} ({found}/{len(ref)} true pairs around {len(sample)} sampled rows; "
          f"reference cdist {t_ref:.0f}s); decision agreement {agree:.4f}", flush=True)

    brows = np.sort(rng.choice(n, min(base_sample, n), replace=False))
    per_row = m1_seconds_per_row(texts, brows)
    baseline = per_row * n / workers
    print(f"[{name}] m1 per-row method: {per_row * 1000:.1f} ms/row -> est. {baseline:.0f}s on {workers} cores", flush=True)
    return {"name": name, "n": n, "seconds": round(seconds, 2), "stages": stats,
            "baseline_seconds": round(baseline, 1),
            "baseline_method": (f"m1's process.extract(prompt, prompts, scorer=fuzz.ratio, score_cutoff=95, limit=5) "
                                f"timed on {len(brows)} random rows ({per_row * 1000:.1f} ms/row) and scaled to "
                                f"{n} rows / {workers} processes (perfect Pool scaling assumed): an estimate"),
            "speedup": round(baseline / seconds, 1),
            "recall": round(recall, 5), "true_pairs": len(ref), "found_pairs": found,
            "recall_method": (f"exact rapidfuzz cdist(fuzz.ratio, score_cutoff=95) of {len(sample)} random rows "
                              f"against all {n} rows (their whole neighbourhoods), {t_ref:.0f}s"),
            "decision_agreement_on_sample": round(agree, 5), "false_removals_on_sample": false_removals,
            "removed_rows": int(removed.sum()), "verified_pairs": int(len(pairs)), "data": note}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="15k derived prompts, small samples (< 60 s)")
    ap.add_argument("--n-derived", type=int, default=200_000, help="size of the derived pool (full mode)")
    ap.add_argument("--ref-sample", type=int, default=None, help="rows whose neighbourhoods give the recall")
    ap.add_argument("--baseline-sample", type=int, default=None, help="rows timed with m1's per-row method")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dedup.json"))
    a = ap.parse_args(argv)
    t_start, load0 = time.time(), os.getloadavg()
    rows = real_rows()
    print(f"{len(rows)} real questions in ../shared/data ({len(rows) - sum(1 for r in rows if r[2] in EVAL_SETS)} "
          f"pool, {sum(1 for r in rows if r[2] in EVAL_SETS)} eval)", flush=True)
    runs = []
    if a.quick:
        rng = random.Random(a.seed)
        base = rng.sample(rows, 5000)
        texts = derive(base, 15_000, a.seed)
        runs.append(run("quick15k", texts, a.ref_sample or 300, a.baseline_sample or 10, a.seed, a.workers,
                        "5,000 random real questions of ../shared/data plus 10,000 perturbed copies (synthetic)"))
    else:
        texts = [render(q, o) for q, o, _ in rows]
        runs.append(run("real", texts, a.ref_sample or 1000, a.baseline_sample or 30, a.seed, a.workers,
                        f"all {len(rows)} questions of ../shared/data (pool and eval), as rendered by m1"))
        texts = derive(rows, a.n_derived, a.seed)
        runs.append(run(f"derived{a.n_derived // 1000}k", texts, a.ref_sample or 500, a.baseline_sample or 10,
                        a.seed + 1, a.workers,
                        f"the {len(rows)} real questions plus {a.n_derived - len(rows)} perturbed copies of random "
                        "ones (typos 1-4% of the question, white space, option order; 5% exact): synthetic"))
    head = runs[-1]
    out = {"benchmark": "dedup", "mode": "quick" if a.quick else "full",
           "n": head["n"], "seconds": head["seconds"], "baseline_seconds": head["baseline_seconds"],
           "recall": head["recall"], "speedup": head["speedup"],
           "baseline_note": head["baseline_method"], "recall_note": head["recall_method"], "data": head["data"],
           "goal": "recall >= 0.99; 200k prompts in <= 120 s on 2 cores",
           "machine": {"cpus": os.cpu_count(), "workers": a.workers, "load_average_at_start": [round(x, 2) for x in load0],
                       "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                       "note": "shared machine: other jobs were running (see load averages)"},
           "runs": runs, "total_seconds": round(time.time() - t_start, 1)}
    write_json(a.out, out)
    print(f"wrote {a.out}")
    print(f"dedup {head['n']:,} prompts ({head['name']}): {head['seconds']:.1f}s on {a.workers} cores vs m1's all-pairs "
          f"~{head['baseline_seconds']:,.0f}s (est.) = {head['speedup']:,.0f}x faster; recall {head['recall']:.4f} "
          f"({head['found_pairs']}/{head['true_pairs']} exact pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
