"""Benchmark: SFT throughput with padded batches vs packed blocks, at equal loss.

m1 trains on reasoning traces whose lengths are long-tailed (m23K: median 985, p75 1791, max 7461 tokens).
A padded batch pays for its longest row in every row; packing fills fixed blocks with whole examples
(best-fit decreasing, block-diagonal attention, positions restarting per example), so no compute goes to
padding. Both modes train the embedded SmolLM2-135M (full fine-tuning, fp32, CPU) from the same weights, on
the same real examples, for the same number of optimizer steps, with `m1.sft`'s trainer; then the loss on
those examples is measured the same way for both.

Examples: real MedMCQA validation questions as the prompt (chat template applied, not scaled), and as the
reasoning a slice of real PubMedQA abstract text whose token length is drawn from a log-normal fitted to m1's
median and p75, capped at m1's max, then divided by `--scale` so a 2-core CPU can run it (said in the JSON).

Each mode runs in its own process so that peak memory (max RSS) is its own.

    python bench/sft.py --quick     # smoke run (~60 s idle) -> bench/results/sft_quick.json
    python bench/sft.py             # full mode -> bench/results/sft.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "sft.json"             # full mode
OUT_QUICK = ROOT / "bench" / "results" / "sft_quick.json"  # --quick (so a smoke run never overwrites the full one)
M1_LENGTHS = {"median": 985, "p75": 1791, "max": 7461}   # m1 reasoning lengths (tokens), from the paper's Fig. 6


def draw_lengths(n: int, scale: float, seed: int = 0) -> list[int]:
    "Reasoning lengths from a log-normal with m1's median and p75, capped at m1's max, divided by `scale`."
    import numpy as np
    mu = math.log(M1_LENGTHS["median"])
    sigma = math.log(M1_LENGTHS["p75"] / M1_LENGTHS["median"]) / 0.6745
    raw = np.minimum(np.random.default_rng(seed).lognormal(mu, sigma, n), M1_LENGTHS["max"])
    return [max(4, int(round(x / scale))) for x in raw]


def build_examples(n: int, scale: float, seed: int = 0):
    "Real prompt/completion rows with reasoning lengths drawn from m1's distribution (scaled)."
    from datasets import Dataset
    from m1.core import IM_END, think_completion
    from m1.data import LETTERS, answer_text, load_eval, render_prompt
    from m1.models import load_tokenizer
    tok = load_tokenizer(padding_side="right")
    qs = load_eval("MedMCQA_validation", limit=n)
    corpus = [tok(r["question"].split("\n\n")[0])["input_ids"] for r in load_eval("PubMedQA_test", limit=400)]
    stream = [t for ids in corpus for t in ids]
    lengths = draw_lengths(n, scale, seed)
    rows, pos = {"prompt": [], "completion": []}, 0
    for r, L in zip(qs, lengths):
        if pos + L > len(stream):
            pos = 0
        reasoning = tok.decode(stream[pos:pos + L])
        pos += L
        p = tok.apply_chat_template([{"role": "user", "content": render_prompt(r, None)}], tokenize=False,
                                    add_generation_prompt=True)
        c = think_completion(reasoning, f"Answer: {r['answer']}. {answer_text(r)}") + IM_END
        rows["prompt"].append(p)
        rows["completion"].append(c)
    return Dataset.from_dict(rows), lengths


def worker(mode: str, data: str, batch: int, block: int, lr: float, out: str, accum: int = 1) -> None:
    "One training run in this process; writes its measurements as JSON."
    import torch
    torch.set_num_threads(int(os.environ.get("M1_BENCH_THREADS", "2")))
    from datasets import load_from_disk
    from m1.core import load_profile
    from m1.sft import batch_loss, build_trainer, check_sft_data, load_for_training, sft_settings
    ds = load_from_disk(data)
    over = {"learning_rate": lr, "epochs": 1, "warmup_ratio": 0.0, "lr_scheduler": "constant", "max_length": block,
            "gradient_checkpointing": False, "precision": "fp32", "logging_steps": 1}
    if mode == "padded":
        over.update(packing=False, per_device_batch_size=batch, global_batch_size=batch)
    else:
        over.update(packing=True, per_device_batch_size=1, global_batch_size=accum)
    s = sft_settings(load_profile("tiny", {"sft": over}))
    model, tok = load_for_training(s)
    data_ok, report = check_sft_data(ds, tok, block)
    tmp = tempfile.mkdtemp(prefix=f"m1-bench-{mode}-")
    tr = build_trainer(data_ok, s, tmp, model=model, tok=tok, disable_tqdm=True, shuffle_dataset=False)
    seen = {"real": 0, "computed": 0}
    coll = tr.data_collator

    def counting(examples):
        b = coll(examples)
        seen["computed"] += int(b["input_ids"].numel())
        seen["real"] += int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())
        return b
    tr.data_collator = counting
    t = time.perf_counter()
    res = tr.train()
    secs = time.perf_counter() - t
    # loss after training, measured identically for both modes: padded batches of 4, token-mean over completions
    model.eval()
    ev = build_trainer(data_ok, {**s, "packing": False, "per_device_batch_size": 1, "global_batch_size": 1}, tmp,
                       model=model, tok=tok, disable_tqdm=True)
    tot, n = 0.0, 0
    for i in range(0, len(ev.train_dataset), 4):
        b = ev.data_collator([ev.train_dataset[j] for j in range(i, min(i + 4, len(ev.train_dataset)))])
        k = int((b["labels"][:, 1:] != -100).sum())
        tot += batch_loss(model, b) * k
        n += k
    json.dump({"mode": mode, "train_seconds": round(secs, 2), "real_tokens": seen["real"],
               "computed_tokens": seen["computed"], "tok_s": round(seen["real"] / secs, 1),
               "steps": int(res.global_step), "train_loss": round(res.training_loss, 4),
               "loss_after": round(tot / n, 4), "rows": report["rows"],
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}, open(out, "w"))
    shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (< 60 s on an idle 2-core CPU)")
    ap.add_argument("--n", type=int, default=None, help="examples (default 4 quick, 32 full)")
    ap.add_argument("--scale", type=float, default=None, help="divide m1's lengths by this (default 32 quick, 16 full)")
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="padded per-step batch(es) in rows (default: 4 quick; 8 and 16 full)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--worker", choices=["padded", "packed"], help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--block", type=int, default=None,
                    help="packed block length (default: about the longest sequence)")
    ap.add_argument("--accum", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.data, a.batch[0], a.block, a.lr, a.out, a.accum)
        return 0
    os.environ.setdefault("M1_DATA", str(ROOT.parent / "shared" / "data"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    n = a.n or (4 if a.quick else 32)
    scale = a.scale or (32.0 if a.quick else 16.0)
    t0 = time.time()
    import numpy as np
    from m1.core import write_json
    from m1.models import load_tokenizer
    ds, lengths = build_examples(n, scale)
    tok = load_tokenizer(padding_side="right")
    ids = tok([p + c for p, c in zip(ds["prompt"], ds["completion"])])["input_ids"]
    totals = [len(x) for x in ids]
    # Blocks about as long as the longest sequence: on CPU, sdpa computes a packed block's block-diagonal attention
    # densely, so long blocks pay quadratic attention on masked-out pairs (flash-attention's varlen kernels on GPU
    # do not). Several blocks are accumulated per optimizer step; the block is the first length (from the
    # longest sequence up) whose block count divides into exactly as many optimizer steps as the padded run.
    import datasets
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    datasets.disable_progress_bars()
    lens_ds = Dataset.from_dict({"input_ids": ids})
    tmp = Path(tempfile.mkdtemp(prefix="m1-bench-sft-"))
    ds.save_to_disk(str(tmp / "data"))
    env = {**os.environ}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # a shared CPU: spinning OpenMP threads cost everyone
    by_batch = {}
    try:
        for batch in (a.batch or ([4] if a.quick else [8, 16])):
            steps = math.ceil(n / batch)
            start = a.block or 16 * math.ceil(max(totals) / 16)
            for block in range(start, start + 1024, 16):
                n_blocks = len(pack_dataset(lens_ds, block, "bfd"))
                if n_blocks % steps == 0 or a.block:
                    break
            accum = math.ceil(n_blocks / steps)
            runs = {}
            for mode in ("padded", "packed"):
                cmd = [sys.executable, __file__, "--worker", mode, "--data", str(tmp / "data"), "--batch", str(batch),
                       "--block", str(block), "--lr", str(a.lr), "--out", str(tmp / f"{mode}.json"),
                       "--accum", str(accum)]
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL if a.quick else None)
                runs[mode] = json.loads((tmp / f"{mode}.json").read_text())
            pad, pk = runs["padded"], runs["packed"]
            by_batch[batch] = {
                "padded_batch": batch, "packed_block": block, "packed_blocks": n_blocks, "packed_blocks_per_step": accum,
                "padded_tok_s": pad["tok_s"], "packed_tok_s": pk["tok_s"], "speedup": round(pk["tok_s"] / pad["tok_s"], 2),
                "loss_padded": pad["loss_after"], "loss_packed": pk["loss_after"],
                "loss_rel_diff": round(abs(pad["loss_after"] - pk["loss_after"]) / pad["loss_after"], 4),
                "train_loss_padded": pad["train_loss"], "train_loss_packed": pk["train_loss"],
                "steps_padded": pad["steps"], "steps_packed": pk["steps"],
                "pad_fraction_padded": round(1 - pad["real_tokens"] / pad["computed_tokens"], 3),
                "ideal_speedup": round(pad["computed_tokens"] / pad["real_tokens"], 2),
                "peak_rss_mb_padded": pad["peak_rss_mb"], "peak_rss_mb_packed": pk["peak_rss_mb"],
                "train_seconds_padded": pad["train_seconds"], "train_seconds_packed": pk["train_seconds"]}
            print(f"batch {batch}: {by_batch[batch]}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = by_batch[max(by_batch)]            # the headline: the largest padded batch (16 = m1's global batch)
    res = {
        "mode": "quick" if a.quick else "full",
        "model": "smollm2-135m-instruct (full fine-tuning, fp32, CPU, 2 threads)",
        "examples": n, "learning_rate": a.lr,
        "headline": f"padded batch {head['padded_batch']} (all batch sizes under by_batch)",
        **head,
        "by_batch": {str(k): v for k, v in by_batch.items()},
        "attention_note": ("CPU sdpa: a packed block's attention is computed densely over the whole block (masked), "
                           "so blocks are kept near the longest sequence; on GPU, flash-attention varlen kernels "
                           "skip the masked pairs"),
        "lengths_note": (f"reasoning lengths drawn from a log-normal fitted to m1's median {M1_LENGTHS['median']} and "
                         f"p75 {M1_LENGTHS['p75']} (capped at {M1_LENGTHS['max']}), divided by {scale:g} for the CPU; "
                         "prompts are real MedMCQA questions, not scaled, so padding waste is smaller than at m1's "
                         "scale; reasoning text is real PubMedQA abstract text"),
        "batch_note": ("m1 itself trains with 1 sequence per GPU (no padding at all) and 16 per optimizer step; the "
                       "padded batches here are what a single device doing 8 or 16 sequences per step would pad"),
        "scale": scale,
        "reasoning_tokens": {"median": float(np.median(lengths)), "p75": float(np.percentile(lengths, 75)),
                             "max": int(max(lengths))},
        "sequence_tokens": {"median": float(np.median(totals)), "max": int(max(totals)), "total": int(sum(totals))},
        "load_average_1m": round(os.getloadavg()[0], 2), "seconds": round(time.time() - t0, 1),
        "goal": "speedup >= 1.5 at equal loss (loss_rel_diff small)",
    }
    if a.quick:
        res["note"] = ("quick is a smoke run of the machinery (4 rows, one step): too little padding for its speedup "
                       "to mean anything; the full mode measures it")
    write_json(OUT_QUICK if a.quick else OUT, res)
    print(json.dumps(res, indent=1))
    print("; ".join(f"batch {k}: packed {v['packed_tok_s']} vs padded {v['padded_tok_s']} tok/s = {v['speedup']}x "
                    f"at loss {v['loss_packed']} vs {v['loss_padded']}" for k, v in by_batch.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
