"""Benchmark: decoding throughput of the budget-forcing engine versus `model.generate` one question at a time.

m1's README answers questions by calling `model.generate` on one prompt at a time. The engine
(`m1.engine.TransformersBackend`) decodes many sequences together: length-sorted batches with left padding,
a KV cache, prefill that applies the LM head to the last position only, and rows retired from the batch (and
the cache) as soon as they are done. Both sides decode exactly `--tokens` new tokens per question (the stop
markers are masked, `min_new_tokens` for `generate`), greedy, fp32, on the same real questions from
`../shared/data/eval` with the embedded SmolLM2-135M-Instruct, with the same torch thread count. Reported:

* `naive_tok_s`: generated tokens per second of wall time, `model.generate` one question at a time;
* `engine_tok_s`: the same with the engine, batched; `speedup` = engine / naive (goal >= 5 on 2 cores);
* `matmul_peak_gflops`: this machine's measured fp32 matmul peak (a large torch matmul), and
  `engine_peak_fraction`: the engine's useful model FLOPs (2 x parameters per token, prompt included, plus
  attention) as a fraction of it.

    python bench/throughput.py --quick   # < 60 s on an idle 2-core machine
    python bench/throughput.py           # full mode -> bench/results/throughput.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "throughput.json"


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    "Measured fp32 GFLOP/s of an n x n matmul (best of `reps`)."
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def model_flops(model, prompt_lens: list[int], new: int) -> float:
    "Useful forward FLOPs: 2 x parameters per token processed, plus attention scores and values."
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())          # tied embedding counted once: it is the LM head
    flops = 0.0
    for L in prompt_lens:
        flops += 2 * params * 1                                   # prefill: LM head on the last position only
        flops += 2 * (params - cfg.vocab_size * cfg.hidden_size) * (L - 1)
        ctx = L + new / 2                                         # mean context while decoding
        flops += 2 * params * new + 4 * cfg.num_hidden_layers * cfg.hidden_size * (L * L / 2 + ctx * new)
    return flops


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small run (< 60 s on an idle 2-core machine)")
    ap.add_argument("--n", type=int, default=None, help="questions for the engine")
    ap.add_argument("--n-naive", type=int, default=None, help="questions for the one-at-a-time baseline")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per question")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", default="auto", help='torch threads: an int or "auto" (cores not already busy)')
    ap.add_argument("--set", default="MedMCQA_validation")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    n = a.n or (16 if a.quick else 64)
    n_naive = a.n_naive or (3 if a.quick else 6)
    new = a.tokens or (24 if a.quick else 64)
    bs = a.batch_size or (16 if a.quick else 64)

    import torch
    from m1.backend import chat_prompt_ids
    from m1.engine import TransformersBackend, set_threads
    from m1.core import write_json
    from m1.data import load_eval, render_prompt
    from m1.models import load_model
    threads = set_threads(a.threads if a.threads == "auto" else int(a.threads))
    model, tok = load_model()
    rows = list(load_eval(a.set, limit=n))
    pids = [chat_prompt_ids(tok, render_prompt(r)) for r in rows]
    peak = matmul_peak()

    # the baseline: model.generate, one question at a time (as m1's README)
    t0, made, naive_out = time.time(), 0, []
    with torch.inference_mode():
        for p in pids[:n_naive]:
            x = torch.tensor([p])
            out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, eos_token_id=[1, 2], pad_token_id=tok.pad_token_id)
            made += out.shape[1] - len(p)
            naive_out.append(out[0, len(p):].tolist())
    naive_s = time.time() - t0
    naive = made / naive_s

    be = TransformersBackend(model, tok, batch_size=bs, threads=threads)
    t0 = time.time()
    conts = be.continue_(pids, new, min_new=new)
    engine_s = time.time() - t0
    assert all(len(c.tokens) == new for c in conts)
    engine = sum(len(c.tokens) for c in conts) / engine_s
    fl = model_flops(model, [len(p) for p in pids], new)
    # agreement: the engine's batched greedy tokens equal generate's one-at-a-time tokens
    agree = sum(o == c.tokens for o, c in zip(naive_out, conts))
    res = {
        "model": "smollm2-135m-instruct (fp32, greedy)", "set": a.set, "questions_engine": n,
        "questions_naive": n_naive, "new_tokens": new, "batch_size": bs, "threads": threads,
        "cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "mean_prompt_tokens": round(sum(map(len, pids)) / len(pids), 1),
        "naive_tok_s": round(naive, 2), "engine_tok_s": round(engine, 2), "speedup": round(engine / naive, 2),
        "naive_s": round(naive_s, 2), "engine_s": round(engine_s, 2),
        "matmul_peak_gflops": round(peak, 1), "engine_gflops": round(fl / engine_s / 1e9, 2),
        "engine_peak_fraction": round(fl / engine_s / 1e9 / peak, 3),
        "engine_equals_generate": f"{agree}/{n_naive}",
        "mode": "quick" if a.quick else "full",
        "command": "python bench/throughput.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
    }
    write_json(a.out, res)
    print(f"naive {res['naive_tok_s']} tok/s, engine {res['engine_tok_s']} tok/s (batch {bs}, {threads} threads); "
          f"{res['engine_peak_fraction']:.0%} of the measured {res['matmul_peak_gflops']} GFLOP/s matmul peak; "
          f"engine = generate on {agree}/{n_naive}")
    print(f"speedup {res['speedup']}x (goal >= 5)")
    return res


if __name__ == "__main__":
    main()
