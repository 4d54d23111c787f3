"""The eval store and `m1 eval`'s input checks, without running a model (fast), and resuming a sampled run
(`--samples K`) with the embedded model at a few tokens. The real kill-and-resume test is in nbs/11_eval.ipynb."""
import contextlib
import io
import json

import pandas as pd
import pytest

from m1.core import JsonlStore
from m1.evaluate import (ResultsStore, StoreConfigError, eval_main, load_results, make_record, metrics_table,
                         question_keys, run_config)
from m1.data import load_eval


def _cli(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = eval_main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def test_bad_inputs_fail_fast(tmp_path):
    rc, msg = _cli(["--sets", "MedQA", "--out", str(tmp_path)])
    assert rc == 2 and "eval spec 'MedQA': not a known set" in msg and "MedQA_USLME_test" in msg
    rc, msg = _cli(["--budgets", "", "--out", str(tmp_path)])
    assert rc == 2 and "--budgets is empty" in msg
    rc, msg = _cli(["--waits", "-1", "--out", str(tmp_path)])
    assert rc == 2 and "--waits (eval.waits): Wait counts must be >= 0, got [-1]" in msg
    assert not (tmp_path / "results.jsonl").exists(), "a refused run must not create a store"


def test_store_of_another_configuration(tmp_path):
    path = tmp_path / "results.jsonl"
    a = ResultsStore(path, run_config("model-a", answer_tokens=32))
    row = load_eval("MedQA_USLME_test", limit=1)[0]
    rec = make_record({"answer": "\\boxed{%s}" % row["answer"]}, row, set_name="MedQA_USLME_test", row_idx=0,
                      budget=32, waits=0, config=a.config, config_hash=a.hash, copy=0)
    a.append([rec])
    with pytest.raises(StoreConfigError, match="force-new"):
        ResultsStore(path, run_config("model-b", answer_tokens=32))
    rc, msg = _cli(["--model", "smollm2-135m-instruct", "--out", str(tmp_path)])
    assert rc == 2 and "--force-new" in msg
    b = ResultsStore(path, run_config("model-b", answer_tokens=32), force_new=True)
    kept = JsonlStore(b.moved_to).read()
    assert [r["kind"] for r in kept] == ["header", "result"] and kept[1]["key"] == rec["key"]
    assert load_results(b.moved_to)["correct"].tolist() == [True]
    assert load_results(b.moved_to, scorer="m1")["correct"].tolist() == [True]


def test_torn_line_and_duplicates_are_tolerated(tmp_path):
    path = tmp_path / "results.jsonl"
    s = ResultsStore(path, run_config("m", answer_tokens=8))
    rows = load_eval("PubMedQA_test", limit=3)
    recs = [make_record({"answer": "The answer is A."}, r, set_name="PubMedQA_test", row_idx=i, budget=8, waits=0,
                        config=s.config, config_hash=s.hash, copy=qk[2])
            for i, (r, qk) in enumerate(zip(rows, question_keys(rows)))]
    s.append(recs)
    s.append(recs[:1])                                   # a duplicate (two runs without the lock)
    with open(path, "a") as f:
        f.write(json.dumps(recs[0])[:30])               # a torn last line
    df = load_results(path)
    assert len(df) == 3 and df["key"].is_unique
    assert ResultsStore(path, run_config("m", answer_tokens=8)).done_keys() == {r["key"] for r in recs}
    m = metrics_table(df, n_boot=100)
    assert m.set_index("set").loc["PubMedQA_test", "acc"] == sum(a == "A" for a in rows["answer"]) / 3


def test_store_of_the_old_format_is_still_readable(tmp_path):
    "A format-1 store (row-number keys, strict scores under pred/correct) is read under its strict scores."
    from m1.core import stable_hash
    cfg = {"format": 1, "model": "m", "answer_tokens": 8, "seed": 42, "match": "last"}
    h = stable_hash(cfg)
    rows = load_eval("MedQA_USLME_test", limit=2)
    recs = [{"kind": "header", "key": "header", "config_hash": h, "config": cfg}]
    recs += [{"kind": "result", "key": f"k{i}", "config": h, "set": "MedQA_USLME_test", "qid": r["id"], "row": i,
              "model": "m", "budget": 8, "waits": 0, "seed": 42, "mode": "sweep", "thinking_tokens": 3,
              "answer_tokens": 2, "waits_used": 0, "stopped": "self", "answer_text": "x", "pred": r["answer"] if i else None,
              "gold": r["answer"], "correct": bool(i), "method": "boxed" if i else "none", "n_options": 4}
             for i, r in enumerate(rows)]
    JsonlStore(tmp_path / "results.jsonl").append(recs)
    df = load_results(tmp_path / "results.jsonl")
    assert df["correct"].tolist() == [False, True] and set(df["mode"]) == {"budget"} and set(df["cell"]) == {"sweep"}
    assert metrics_table(df, n_boot=50).set_index("set").loc["Average", "acc"] == 0.5
    from m1.metrics import compute_frontier, vote_metrics        # no sample, copy or content hash: one sample each
    assert df["sample"].tolist() == [0, 0] and vote_metrics(df, n_boot=20)["k"].unique().tolist() == [1]
    assert compute_frontier(df, n_boot=20)[["strategy", "label", "acc", "mean_tokens"]].values.tolist() == \
        [["budget sweep", "b=8", 0.5, 5.0]]
    with pytest.raises(ValueError, match="strict scores only"):
        load_results(tmp_path / "results.jsonl", scorer="m1")


# ---- parallel scaling: several sampled answers per question (issue 14 §1) ----

from m1.budget import sample_seed  # noqa: E402
from m1.metrics import compute_frontier, vote, vote_metrics  # noqa: E402

SAMPLED = dict(model="smollm2-135m-instruct", sets=["MedMCQA_validation"], limit=2, budgets=[8], waits=[0],
               answer_tokens=4, min_thinking=4, batch_size=4, replace_grid=True, progress=False, temperature=1.0)


def test_vote_and_its_tie_rule():
    assert vote(["B", "C", "B"]) == "B"
    assert vote(["C", "B"]) == "C" and vote(["B", "C"]) == "B"          # a tie: the earliest sample's letter
    assert vote(["D", "A", "C", "A", "C"]) == "A"                        # A and C tie; A's first vote came first
    assert vote([None, None, "C"]) == "C" and vote([None, "A", "B"]) == "A"   # unreadable answers never win ...
    assert vote([None, None]) is None and vote([]) is None               # ... unless all are unreadable
    assert vote([float("nan"), "E"]) == "E"                              # NaN (a DataFrame's missing letter) = None


def test_sample_seeds():
    assert sample_seed(42, 0) == 42                                       # sample 0 is the one-sample run
    seeds = {sample_seed(42, k) for k in range(1, 16)}
    assert len(seeds) == 15 and 42 not in seeds and sample_seed(42, 5) == sample_seed(42, 5)


@pytest.fixture(scope="module")
def sampler():
    from m1.engine import make_backend
    return make_backend("smollm2-135m-instruct", kind="transformers", batch_size=4, temperature=1.0)


def _records(path):
    return [r for r in JsonlStore(path).read() if r.get("kind") == "result"]


def test_resume_with_samples(tmp_path, sampler):
    "K=2, then K=3 into the same store: only sample 2 is decoded, the stored samples are reused as they are, and the"
    " store ends equal to a K=3 run from scratch; samples of one question differ; a finished run loads no model."
    from m1.backend import chat_prompt_ids, read_inputs
    from m1.evaluate import run_eval
    out = tmp_path / "a"
    a = run_eval("tiny", out=out, backend=sampler, samples=2, **SAMPLED)
    assert (a["manifest"]["run"]["written"], a["manifest"]["samples"]) == (4, 2)
    assert a["manifest"]["decoding"]["temperature"] == 1.0
    first = _records(out / "results.jsonl")
    df = load_results(out / "results.jsonl", with_thinking=True)
    assert sorted(df["sample"]) == [0, 0, 1, 1] and df["key"].is_unique
    th = df.pivot(index="row", columns="sample", values="thinking")
    assert (th[0] != th[1]).any(), "two samples of a question at temperature 1.0 must differ (per-sample seeds)"
    rows = list(load_eval("MedMCQA_validation", limit=2))
    prompts = sum(len(chat_prompt_ids(sampler.tok, u)) for u, _ in read_inputs(rows))
    p0, d0 = sampler.prefilled_tokens, sampler.decoded_tokens
    b = run_eval("tiny", out=out, backend=sampler, samples=3, **SAMPLED)
    assert (b["manifest"]["run"]["written"], b["manifest"]["run"]["already"]) == (2, 4)
    assert sampler.prefilled_tokens - p0 < prompts, "sample 2 must reuse the prompts' cached keys/values"
    assert 0 < sampler.decoded_tokens - d0 <= 2 * (8 + 4 + 2)             # one sample of two questions: thinking + answer
    assert _records(out / "results.jsonl")[:4] == first                   # stored samples untouched, reused
    c = run_eval("tiny", out=tmp_path / "c", backend=sampler, samples=3, **SAMPLED)
    cols = ["key", "sample", "thinking_tokens", "answer_text", "pred", "correct"]
    pd.testing.assert_frame_equal(b["results"][cols].sort_values("key").reset_index(drop=True),
                                  c["results"][cols].sort_values("key").reset_index(drop=True))
    again = run_eval("tiny", out=out, samples=3, **SAMPLED)              # finished: no backend is needed
    assert (again["manifest"]["run"]["written"], again["manifest"]["run"]["already"]) == (0, 6)
    assert set(again["votes"]["k"]) == {1, 2, 3} and (out / "votes.csv").exists() and (out / "frontier.csv").exists()
    fr = again["frontier"]
    assert list(fr.columns[:8]) == ["model", "strategy", "label", "mean_tokens", "acc", "lo", "hi", "n"]
    assert fr["strategy"].tolist() == ["budget sweep", "vote@K (b=8)", "vote@K (b=8)", "vote@K (b=8)"]
    v = fr.set_index("label")["mean_tokens"]
    assert v["K=3 @ b=8"] == pytest.approx(3 * v["K=1 @ b=8"]) and v["K=1 @ b=8"] == v["b=8"]
    assert "vote@3" in (out / "results.md").read_text() and "chance" in (out / "results.md").read_text()


def test_greedy_samples_are_refused(tmp_path, sampler):
    from m1.evaluate import run_eval
    with pytest.raises(ValueError, match=r"--samples 3 \(eval.samples\) at temperature 0"):
        run_eval("tiny", out=tmp_path / "g", **{**SAMPLED, "temperature": 0.0}, samples=3)
    rc, msg = _cli(["--samples", "2", "--sets", "MedQA_USLME_test", "--out", str(tmp_path / "g")])
    assert rc == 2 and msg.count("\n") == 1 and "--temperature" in msg and "--samples 2" in msg, msg
    assert not (tmp_path / "g").exists()
    greedy = dict(SAMPLED, temperature=0.0)
    with pytest.raises(ValueError, match="the backend decodes with"):   # a sampling backend under a greedy config
        run_eval("tiny", out=tmp_path / "h", backend=sampler, **greedy)
