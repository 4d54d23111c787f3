"""Benchmark: a budget sweep from one shared prefix versus independent runs (m1's way).

m1 runs the whole generation again for every thinking budget of its grid. `m1.budget.budget_sweep` thinks
once, to the largest budget, and derives every smaller budget from that prefix (then answers each budget from
its own prefix, identical prefixes once). This benchmark runs both on the same real questions from
`../shared/data/eval` with the embedded SmolLM2-135M-Instruct (fp32, in process, greedy) and reports:

* `tokens_independent`, `tokens_shared`: tokens decoded by the backend (thinking, stop markers, answers);
* `token_ratio` = shared / independent (goal <= 0.55 for a doubling grid);
* `answers_identical`: every (question, budget) has the same thinking tokens, stop kind, Wait count and
  answer tokens both ways;
* `wall_independent_s`, `wall_shared_s` (each side starts from an empty prefix cache and uses it as it goes,
  as SGLang/vLLM would).

SmolLM2-135M was never trained on the think format: left alone it closes the think block at once (empty
thinking, and every budget would give the same trivial run). So both ways use `min_thinking` (vLLM's
`min_tokens`): the end-of-think markers are masked for the first N thinking tokens, after which the model
stops when it likes (`natural`, the headline). The full mode adds the worst case for sharing, `to_budget`:
`min_thinking` = the largest budget, so every sample thinks to its budget at every budget and no answer can
be shared. The model is at chance on these questions: this measures the engine, not medicine.

    python bench/budget_sweep.py --quick   # < 60 s on an idle 2-core machine
    python bench/budget_sweep.py           # full mode -> bench/results/budget_sweep.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "budget_sweep.json"


def questions(n: int, sets: list[str]) -> list[dict]:
    from m1.data import load_eval
    per = -(-n // len(sets))
    rows = [dict(r) for s in sets for r in load_eval(s, limit=per)]
    return rows[:n]


def compare(be, rows, budgets, **kw) -> dict:
    "Shared-prefix sweep, then independent runs; tokens, wall times and equality."
    from m1.budget import budget_sweep
    be.prefix.clear()                      # both sides start from a cold prefix cache
    t0, d0 = time.time(), be.decoded_tokens
    shared = budget_sweep(be, rows, budgets, shared_prefix=True, **kw)
    t1, d1 = time.time(), be.decoded_tokens
    be.prefix.clear()
    indep = budget_sweep(be, rows, budgets, shared_prefix=False, **kw)
    t2, d2 = time.time(), be.decoded_tokens
    key = lambda r: (r.thinking_ids, r.stopped, r.waits_used, r.answer_ids)
    mismatches = [(b, i) for b in budgets for i, (s, r) in enumerate(zip(shared[b], indep[b])) if key(s) != key(r)]
    over = [(b, r.thinking_tokens) for b in budgets for r in shared[b] + indep[b] if r.thinking_tokens > b]
    n = len(rows)
    return {
        "min_thinking": kw["min_thinking"],
        "tokens_shared": d1 - d0, "tokens_independent": d2 - d1, "token_ratio": round((d1 - d0) / (d2 - d1), 4),
        "answers_identical": not mismatches, "mismatches": mismatches[:20], "budget_exceeded": over[:20],
        "wall_shared_s": round(t1 - t0, 2), "wall_independent_s": round(t2 - t1, 2),
        "wall_ratio": round((t1 - t0) / (t2 - t1), 4),
        "stopped_by_itself": {b: sum(r.stopped == "self" for r in shared[b]) for b in budgets},
        "mean_thinking_tokens": {b: round(sum(r.thinking_tokens for r in shared[b]) / n, 1) for b in budgets},
        "accuracy": {b: round(sum(bool(r.correct) for r in shared[b]) / n, 3) for b in budgets},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small run (< 60 s on an idle 2-core machine)")
    ap.add_argument("--n", type=int, default=None, help="number of questions")
    ap.add_argument("--budgets", default=None, help="comma-separated budgets (default: a doubling grid)")
    ap.add_argument("--waits", type=int, default=0)
    ap.add_argument("--answer-tokens", type=int, default=None)
    ap.add_argument("--min-thinking", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", default="auto", help='torch threads: an int or "auto" (cores not already busy)')
    ap.add_argument("--sets", default="MedMCQA_validation,MedQA_USLME_test")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    n = a.n or (6 if a.quick else 16)
    budgets = [int(b) for b in a.budgets.split(",")] if a.budgets else ([16, 32, 64, 128] if a.quick else [32, 64, 128, 256])
    answer_tokens = a.answer_tokens or (16 if a.quick else 32)

    from m1.engine import TransformersBackend
    from m1.core import write_json
    from m1.models import load_model
    model, tok = load_model()
    rows = questions(n, a.sets.split(","))
    threads = a.threads if a.threads == "auto" else int(a.threads)
    be = TransformersBackend(model, tok, batch_size=a.batch_size, threads=threads)
    kw = dict(waits=a.waits, answer_tokens=answer_tokens)
    nat = compare(be, rows, budgets, min_thinking=a.min_thinking, **kw)
    res = {
        "model": "smollm2-135m-instruct (fp32, in process, greedy)", "questions": len(rows), "sets": a.sets.split(","),
        "budgets": budgets, "waits": a.waits, "answer_tokens": answer_tokens, "batch_size": a.batch_size,
        "threads": be.threads, "cores": os.cpu_count(), "load_avg_1m_at_end": None,
        **{k: nat[k] for k in ("tokens_independent", "tokens_shared", "token_ratio", "answers_identical",
                               "wall_independent_s", "wall_shared_s")},
        "natural": nat,
        "note": "SmolLM2-135M is untrained on the think format and at chance on these questions; min_thinking masks "
                "its end-of-think markers for the first N thinking tokens",
        "mode": "quick" if a.quick else "full",
        "command": "python bench/budget_sweep.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
    }
    if not a.quick:
        be.prefix.clear()
        res["to_budget"] = compare(be, rows, budgets, min_thinking=max(budgets), **kw)
        res["answers_identical"] = nat["answers_identical"] and res["to_budget"]["answers_identical"]
    res["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    write_json(a.out, res)
    print(f"{len(rows)} questions, budgets {budgets}: shared prefix decodes {res['tokens_shared']} tokens vs "
          f"{res['tokens_independent']} independent; wall {res['wall_shared_s']}s vs {res['wall_independent_s']}s")
    if "to_budget" in res:
        tb = res["to_budget"]
        print(f"worst case (every sample thinks to its budget): token_ratio {tb['token_ratio']}, "
              f"identical {tb['answers_identical']}, wall {tb['wall_shared_s']}s vs {tb['wall_independent_s']}s")
    print(f"token_ratio {res['token_ratio']} (goal <= 0.55), answers_identical {res['answers_identical']}")
    return res


if __name__ == "__main__":
    main()
