"""`m1 eval` trusted under changed data and bad input (issue 12 §2-§4): the store is keyed by question content, a
changed eval file re-evaluates exactly the changed questions, other tools' files are never overwritten, every
bad value is one line naming its flag before anything is written, and command-line grid flags replace the
profile's grid. Real model (SmolLM2-135M, in-process) at a few tokens; real eval files from tests/fixtures."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from m1.core import JsonlStore, load_profile, stable_hash
from m1.evaluate import (ResultsStore, eval_grid, eval_main, is_results_store, load_results, run_config, run_eval)

FIX = Path(__file__).parent / "fixtures" / "eval_files"
TINY = dict(budgets=[4], waits=[0], answer_tokens=4, min_thinking=2, batch_size=4, replace_grid=True, progress=False)


@pytest.fixture(scope="module")
def backend():
    from m1.engine import make_backend
    return make_backend("smollm2-135m-instruct", kind="transformers", batch_size=4)


def _cli(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = eval_main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def _copy(tmp_path, name="cardiology_text.json"):
    dst = tmp_path / "data" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIX / name, dst)
    return dst


def test_changed_question_is_reevaluated(tmp_path, backend):
    src, out = _copy(tmp_path), tmp_path / "out"
    rows = json.loads(src.read_text())
    P = load_profile("tiny")
    first = run_eval(P, model="smollm2-135m-instruct", sets=[str(src)], out=out, backend=backend, **TINY)
    n = len(rows)
    assert first["manifest"]["run"]["written"] == n and list(first["manifest"]["sets"]) == ["cardiology_text"]
    rows[1]["question"] = rows[1]["question"].rstrip("?") + " in an adult?"
    src.write_text(json.dumps(rows, indent=2))
    second = run_eval(P, model="smollm2-135m-instruct", sets=[str(src)], out=out, backend=backend, **TINY)
    assert (second["manifest"]["run"]["written"], second["manifest"]["run"]["already"]) == (1, n - 1)
    a, b = first["results"].set_index("row"), second["results"].set_index("row")
    assert [r for r in range(n) if a.loc[r, "key"] != b.loc[r, "key"]] == [1]
    assert b.loc[1, "qhash"] != a.loc[1, "qhash"] and b.loc[1, "qid"] != a.loc[1, "qid"]
    for r in set(range(n)) - {1}:                       # reused, not regenerated
        assert b.loc[r, "answer_text"] == a.loc[r, "answer_text"]
    # nothing changed: nothing written, and no model is needed
    third = run_eval(P, model="smollm2-135m-instruct", sets=[str(src)], out=out, **TINY)
    assert (third["manifest"]["run"]["written"], third["manifest"]["run"]["already"]) == (0, n)


def test_other_tools_files_are_never_overwritten(tmp_path, backend):
    src = _copy(tmp_path)
    out = tmp_path / "theirs"
    out.mkdir()
    foreign = '{"id": 1, "prediction": "B"}\n{"id": 2, "prediction": "C"}'     # no final newline
    (out / "results.jsonl").write_text(foreign)
    rc, msg = _cli(["--sets", str(src), "--limit", "1", "--budgets", "4", "--out", str(out)])
    assert rc == 2 and "not an m1 results store" in msg and "--force-new" in msg
    assert (out / "results.jsonl").read_text() == foreign and sorted(p.name for p in out.iterdir()) == ["results.jsonl"]
    logs = []
    r = run_eval("tiny", model="smollm2-135m-instruct", sets=[str(src)], limit=1, out=out, force_new=True,
                 backend=backend, log=logs.append, **TINY)
    moved = [p for p in out.iterdir() if p.name.startswith("results.foreign.")]
    assert len(moved) == 1 and moved[0].read_text() == foreign and "moved" in logs[0] and moved[0].name in logs[0]
    assert is_results_store(out / "results.jsonl") and len(r["results"]) == 1
    # result tables of another tool, with no store of ours beside them, are refused too
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_text("model,acc\nx,0.5\n")
    rc, msg = _cli(["--sets", str(src), "--budgets", "4", "--out", str(other)])
    assert rc == 2 and "results.csv exists" in msg and (other / "results.csv").read_text() == "model,acc\nx,0.5\n"
    assert sorted(p.name for p in other.iterdir()) == ["results.csv"]


def test_old_row_number_store_is_refused(tmp_path):
    cfg = dict(run_config("smollm2-135m-instruct", answer_tokens=4), format=1)
    path = tmp_path / "results.jsonl"
    text = json.dumps({"kind": "header", "key": "header", "config_hash": stable_hash(cfg), "config": cfg}) + "\n"
    path.write_text(text)
    rc, msg = _cli(["--sets", str(FIX / "cardiology_text.json"), "--budgets", "4", "--answer-tokens", "4",
                    "--out", str(tmp_path)])
    assert rc == 2 and "older format 1" in msg and "--force-new" in msg and path.read_text() == text


BAD = [  # (argv, the text the one error line must hold)
    (["--sets", "MedQA"], "eval spec 'MedQA': not a known set"),
    (["--sets", ","], "--sets is empty"),
    (["--sets", "{fix}/bad/empty.json"], "no rows (an empty eval set)"),
    (["--sets", "{fix}/bad/empty_set.json"], "set 'Renal': no rows"),
    (["--sets", "{fix}/bad/letter_text_disagree.json"], "letter_text_disagree.json"),
    (["--sets", "{fix}/bad/broken_line.jsonl"], "broken_line.jsonl"),
    (["--sets", "{fix}/missing.jsonl"], "missing.jsonl"),
    (["--sets", "{fix}"], "eval_files"),
    (["--budgets", ""], "--budgets is empty"),
    (["--budgets", "0"], "--budgets (eval.budgets) must be positive token counts, got [0]"),
    (["--budgets", "32,abc"], "--budgets must be integers, got 'abc'"),
    (["--budgets", "1.5"], "--budgets must be integers, got '1.5'"),
    (["--waits", "-1"], "--waits (eval.waits): Wait counts must be >= 0, got [-1]"),
    (["--waits", ""], "--waits is empty"),
    (["--waits", "0,1"], "needs a positive --wait-budget"),
    (["--budgets", "16", "--wait-budget", "64"], "--wait-budget 64 needs --waits"),
    (["--wait-budget", "0"], "--wait-budget must be an integer >= 1, got 0"),
    (["--wait-budget", "abc"], "argument --wait-budget: invalid int value: 'abc'"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--answer-tokens", "0"], "--answer-tokens must be an integer >= 1, got 0"),
    (["--answer-tokens", "-5"], "--answer-tokens must be an integer >= 1, got -5"),
    (["--min-thinking", "-1"], "--min-thinking must be an integer >= 0, got -1"),
    (["--limit", "-3"], "argument --limit: must be a positive number of questions per set or 'all', got -3"),
    (["--limit", "0"], "argument --limit: must be a positive number"),
    (["--limit", "many"], "argument --limit: must be a positive number"),
    (["--mode", "think"], "argument --mode: invalid choice: 'think'"),
    (["--scorer", "loose"], "argument --scorer: invalid choice: 'loose'"),
    (["--mode", "plain", "--waits", "0,2"], "Waits apply to --mode budget only"),
    (["--mode", "cot", "--wait-budget", "64"], "--wait-budget applies to --mode budget only"),
    (["--profile", "nope"], "nope"),
    (["--model", "no-such-model"], "'no-such-model' is not a registry name"),
    (["--base-url", "http://127.0.0.1:9/v1", "--model", "smollm2-135m-instruct", "--sets",
      "{fix}/cardiology_text.json", "--budgets", "4"], "http://127.0.0.1:9/v1"),          # a server that is down
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--samples", "2"], "--samples 2 (eval.samples) at temperature 0 (--temperature, eval.temperature)"),
    (["--samples", "4", "--temperature", "0"], "greedy decoding makes every sample the same"),
    (["--samples", "0"], "--samples must be an integer >= 1, got 0"),
    (["--samples", "two"], "argument --samples: invalid int value: 'two'"),
    (["--temperature", "-0.5"], "temperature (--temperature, eval.temperature) must be a number >= 0"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-p", "0"], "top_p (--top-p, eval.top_p) must be a number in (0, 1], got 0.0"),
    (["--top-p", "1.5", "--temperature", "0.7"], "--top-p"),
    (["--vote", "mean"], "argument --vote: invalid choice: 'mean'"),
]


@pytest.mark.parametrize("argv,expect", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, argv, expect):
    out = tmp_path / "out"
    argv = [a.replace("{fix}", str(FIX)) for a in argv]
    rc, msg = _cli(argv + ["--out", str(out)])
    assert rc == 2, msg
    assert msg.startswith("m1 eval: error: ") and msg.count("\n") == 1 and "Traceback" not in msg, msg
    assert expect in msg, msg
    assert not out.exists(), "a refused run writes nothing"


def test_grid_flags_replace_the_profile_grid():
    E = load_profile("tiny").eval
    assert eval_grid(E, "budget", [16], None, None, replace_grid=True)[3] == [(16, 0, "sweep")]
    assert eval_grid(E, "budget", None, [0, 1], 32, replace_grid=True)[3] == [(32, 0, "force"), (32, 1, "force")]
    merged = eval_grid(E, "budget", [16], None, None, replace_grid=False)[3]      # a notebook parameter: merged
    assert (E.wait_budget, 1, "force") in merged and (16, 0, "sweep") in merged
    assert eval_grid(E, "plain", None, None, None)[3] == [(E.max_new_tokens, 0, "direct")]
    assert eval_grid(load_profile("paper").eval, "cot", None, None, None)[3] == [(2048, 0, "direct")]


def test_cli_end_to_end_scorer_changes_only_scoring(tmp_path):
    "The real command in a subprocess: `--budgets 4` runs budget 4 only; `--scorer m1` then re-tabulates, no model."
    src, out = _copy(tmp_path, "nephrology_letter.jsonl"), tmp_path / "out"
    base = [sys.executable, "-c", "import sys; from m1.cli import main; sys.exit(main(sys.argv[1:]))", "eval", "--sets", str(src), "--limit", "2", "--budgets", "4",
            "--answer-tokens", "4", "--out", str(out), "--no-progress"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run(base, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    man = json.loads((out / "manifest.json").read_text())
    assert man["grid"]["cells"] == [[4, 0, "sweep"]] and man["scorer"] == "strict" and man["run"]["written"] == 2
    md = (out / "results.md").read_text()
    assert "Waits (budget" not in md and "Average (1 set)" in md and "nephrology_letter" in md
    store = (out / "results.jsonl").read_bytes()
    p = subprocess.run(base + ["--scorer", "m1"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    man = json.loads((out / "manifest.json").read_text())
    assert man["scorer"] == "m1" and man["run"]["written"] == 0 and (out / "results.jsonl").read_bytes() == store
    assert "Mode `budget`, scorer `m1`" in (out / "results.md").read_text()
    df = load_results(out / "results.jsonl")
    assert df.attrs["scorer"] == "m1" and df["pred"].notna().all()
    p = subprocess.run(base[:-1] + ["--waits", "0,1"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    assert p.stderr.startswith("m1 eval: error: ") and "--wait-budget" in p.stderr
