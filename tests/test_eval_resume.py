"""The eval store and `m1 eval`'s input checks, without running a model (fast). The real kill-and-resume test
with the embedded model is in nbs/11_eval.ipynb."""
import contextlib
import io
import json

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
    with pytest.raises(ValueError, match="strict scores only"):
        load_results(tmp_path / "results.jsonl", scorer="m1")
