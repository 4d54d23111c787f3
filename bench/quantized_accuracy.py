"""Benchmark: does the engine's int8 path (`quantize="int8"`) answer like fp32?

The same questions (by default 40 from each of the five local eval sets: 200), the same budget-forcing
settings (greedy, the tiny demo's budget), once with the fp32 engine and once with the int8 engine. Reported:

* `agreement`: share of questions where both give the same extracted answer (letter, or both none), and
  `token_equal`: share with identical thinking and answer tokens;
* `accuracy_fp32`, `accuracy_int8`, each with a 95% bootstrap interval over questions, and the paired
  difference int8 - fp32 with its interval (`within_noise`: the interval contains 0);
* `chance`: the mean of 1/options. SmolLM2-135M is at chance on these medical questions, so this shows that
  int8 changes answers no more than noise, not that either answers well.

    python bench/quantized_accuracy.py --quick   # 40 questions
    python bench/quantized_accuracy.py           # 200 -> bench/results/quantized_accuracy.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "quantized_accuracy.json"
SETS = ["MedMCQA_validation", "MedQA_USLME_test", "PubMedQA_test", "MMLU-Pro_Medical_test", "GPQA_Medical_test"]


def interval(x, n_boot: int = 2000, seed: int = 0) -> list[float]:
    "95% bootstrap interval of the mean of `x` (questions resampled)."
    import numpy as np
    x = np.asarray(x, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 questions per set")
    ap.add_argument("--per-set", type=int, default=None, help="questions per eval set (default 40)")
    ap.add_argument("--budget", type=int, default=32, help="thinking budget (the tiny demo's smallest budgets)")
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--min-thinking", type=int, default=8, help="masked stop for the first N thinking tokens")
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    per = a.per_set or (8 if a.quick else 40)
    from m1.budget import budget_force
    from m1.core import write_json
    from m1.data import load_eval
    from m1.engine import TransformersBackend, set_threads
    from m1.models import load_model
    load0 = os.getloadavg()
    threads = set_threads(a.threads if a.threads == "auto" else int(a.threads))
    rows = [dict(r) for s in SETS for r in load_eval(s, limit=per)]
    model, tok = load_model()
    out, secs = {}, {}
    for q in ("none", "int8"):
        be = TransformersBackend(model, tok, threads=threads, quantize=q)
        t0 = time.time()
        out[q] = budget_force(be, rows, a.budget, answer_tokens=a.answer_tokens, min_thinking=a.min_thinking,
                              wait_spacing="word")
        secs[q] = round(time.time() - t0, 1)
    f, i = out["none"], out["int8"]
    cf = [bool(r.correct) for r in f]
    ci = [bool(r.correct) for r in i]
    n = len(rows)
    diff = [b - a_ for a_, b in zip(cf, ci)]
    d_int = interval(diff)
    res = {
        "model": "smollm2-135m-instruct, greedy budget forcing", "sets": SETS, "questions": n,
        "budget": a.budget, "answer_tokens": a.answer_tokens, "min_thinking": a.min_thinking, "threads": threads,
        "agreement": round(sum(x.pred == y.pred for x, y in zip(f, i)) / n, 4),
        "token_equal": round(sum(x.thinking_ids == y.thinking_ids and x.answer_ids == y.answer_ids
                                 for x, y in zip(f, i)) / n, 4),
        "accuracy_fp32": round(sum(cf) / n, 4), "accuracy_fp32_ci95": interval(cf),
        "accuracy_int8": round(sum(ci) / n, 4), "accuracy_int8_ci95": interval(ci),
        "difference": round(sum(diff) / n, 4), "difference_ci95": d_int,
        "within_noise": d_int[0] <= 0 <= d_int[1],
        "answered_fp32": round(sum(r.pred is not None for r in f) / n, 4),
        "answered_int8": round(sum(r.pred is not None for r in i) / n, 4),
        "chance": round(sum(1 / len(r["options"]) for r in rows) / n, 4),
        "seconds": secs, "load_avg_start": [round(x, 2) for x in load0], "loaded": load0[0] > 1.5,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "mode": "quick" if a.quick else "full",
        "command": "python bench/quantized_accuracy.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
    }
    write_json(a.out, res)
    print(f"fp32 {res['accuracy_fp32']:.1%} {res['accuracy_fp32_ci95']}, int8 {res['accuracy_int8']:.1%} "
          f"{res['accuracy_int8_ci95']} (chance {res['chance']:.1%}; SmolLM2-135M is at chance); "
          f"{secs['none']} s vs {secs['int8']} s")
    print(f"int8 vs fp32 on {n} questions: same answer {res['agreement']:.1%}, identical tokens "
          f"{res['token_equal']:.1%}; accuracy difference {res['difference']:+.1%} {d_int} "
          f"({'within noise' if res['within_noise'] else 'NOT within noise'})")
    return res


if __name__ == "__main__":
    main()
