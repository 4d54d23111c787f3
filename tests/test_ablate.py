"""m1 ablate (issue 14, part 2): the variants differ only in selection, the paired difference, the table, bad input.
Fast: nothing is trained or generated; the results stores are written with m1.store on real eval questions."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m1.ablate import (DOWNSTREAM, UPSTREAM, _write_profiles, ablate_settings, ablation_plan, ablation_setup,
                       ablation_table, paired_difference, plan_differences, write_ablation)
from m1.cli import main
from m1.core import load_profile, write_json
from m1.data import load_eval
from m1.reproduce import stage_params
from m1.store import ResultsStore, make_record, run_config


@pytest.mark.parametrize("profile", ["tiny", "paper", "paper-smoke"])
def test_variants_differ_only_in_select_method(profile, tmp_path):
    plan = ablation_plan(profile, tmp_path / "w")
    assert list(plan) == list(load_profile(profile).ablate.variants)
    for v, stages in plan.items():
        assert list(stages) == [*UPSTREAM, *DOWNSTREAM]
        assert stages["select"]["select.method"] == v
    # key by key: every stage's parameters are equal across variants except select.method
    first = next(iter(plan.values()))
    for st in first:
        for v, stages in plan.items():
            keys = set(first[st]) | set(stages[st])
            assert {k for k in keys if first[st].get(k) != stages[st].get(k)} <= {"select.method"}, (v, st)
    assert plan_differences(plan) == {"select": ["select.method"]}
    assert not (tmp_path / "w").exists()                      # planning writes nothing


def test_written_profiles_give_the_planned_records(tmp_path):
    "The YAML profiles a run hands to the notebooks load to exactly the plan's profiles and stage parameters."
    s = ablation_setup("tiny", tmp_path / "w", ["random", "domain_source"])
    paths = _write_profiles(s)
    plan = ablation_plan("tiny", tmp_path / "w", ["random", "domain_source"])
    for v in ("random", "domain_source"):
        P = load_profile(paths[v])
        assert P.select.method == v and P.filter.keep_easy and P.distill.teacher_on == "all" and not P.eval.baseline
        assert {st: stage_params(P, st, s["stage_extra"].get(st)) for st in DOWNSTREAM} == \
            {st: plan[v][st] for st in DOWNSTREAM}
    # the shared profile differs from tiny's own upstream only in what m1's 1K random needs
    shared, tiny = load_profile(paths["shared"]), load_profile("tiny")
    diff = {st: sorted(k for k, x in stage_params(shared, st).items() if stage_params(tiny, st).get(k) != x)
            for st in UPSTREAM}
    assert {k: v for k, v in diff.items() if v} == {"distill": ["distill.teacher_on", "filter.keep_easy"],
                                                    "filter": ["filter.keep_easy"]}


def test_random_needs_easy_questions():
    P = load_profile("tiny", {"ablate": {"keep_easy": False}})
    with pytest.raises(ValueError, match="'random' draws from all verified questions"):
        ablate_settings(P)


def _pair(n=150, p_b=0.5, extra=0.2, seed=3):
    rng, ra, rb = np.random.default_rng(seed), [], []
    for s in ("MedMCQA_validation", "MedQA_USLME_test", "GPQA_Medical_test"):
        cb = rng.random(n) < p_b
        ca = cb.copy()
        ca[rng.choice(np.flatnonzero(~cb), int(extra * n), replace=False)] = True
        for i in range(n):
            k = {"set": s, "qid": f"{s}-{i}", "qhash": f"h{i}", "copy": 0, "budget": 2048, "waits": 0}
            ra.append({**k, "correct": bool(ca[i])})
            rb.append({**k, "correct": bool(cb[i])})
    return pd.DataFrame(ra), pd.DataFrame(rb)


def test_paired_difference_recovers_a_known_difference():
    a, b = _pair()
    d = paired_difference(a, b, n_boot=2000, seed=0).set_index("set")
    assert list(d.index) == ["MedMCQA_validation", "MedQA_USLME_test", "GPQA_Medical_test", "Average"]
    for s, r in d.iterrows():
        assert abs(r["diff"] - 0.2) < 1e-12 and r["lo"] < 0.2 < r["hi"], (s, r)
    assert d.loc["Average", "lo"] > 0 and d.loc["Average", "n_sets"] == 3
    # the paired interval is narrower than resampling the two runs independently
    rng = np.random.default_rng(1)
    ca, cb = a["correct"].to_numpy(float).reshape(3, -1), b["correct"].to_numpy(float).reshape(3, -1)
    ind = np.mean([ca[k][rng.integers(0, 150, (2000, 150))].mean(1) - cb[k][rng.integers(0, 150, (2000, 150))].mean(1)
                   for k in range(3)], 0)
    lo, hi = np.quantile(ind, [0.025, 0.975])
    assert d.loc["Average", "hi"] - d.loc["Average", "lo"] < 0.7 * (hi - lo)
    # only answers both runs have are compared
    part = paired_difference(a, b[b["set"] != "GPQA_Medical_test"], n_boot=200).set_index("set")
    assert part.loc["Average", "n_sets"] == 2


def _fake(root: Path, answers: dict, variants: list, budget=64) -> Path:
    "An ablation folder in the exact shape a run leaves: plan.json, run records as planned, real results stores."
    adir = root / "ablate"
    plan = ablation_plan("tiny", root)
    suite = {s: load_eval(s, limit=4) for s in ("MedMCQA_validation", "PubMedQA_test")}
    qs = [(s, i, dict(r)) for s, d in suite.items() for i, r in enumerate(d)]
    write_json(adir / "plan.json", {"profile": "tiny", "variants": variants, "reference": "random", "budgets": [budget],
                                    "n": 16, "bootstrap": 200, "seed": 42, "note": "CPU-sized"})
    ups = {u: f"id-{u}" for u in UPSTREAM}
    for v, right in answers.items():
        for st in DOWNSTREAM[:-1]:
            write_json(adir / v / st / "manifest.json",
                       {"stage": st, "rows": 16, "report": {"pool": 24, "pool_hard": 18, "selected": 16, "requested": 16},
                        "run": {"params": plan[v][st], "upstream": ups}})
        cfg = run_config("smollm2-135m-instruct", "transformers", 16, 42)
        store = ResultsStore(adir / v / "eval" / "results.jsonl", cfg)
        recs = []
        for (s, i, r), ok in zip(qs, right):
            wrong = next(L for L in "ABCD"[:len(r["options"])] if L != r["answer"])
            recs.append(make_record({"answer": f"\\boxed{{{r['answer'] if ok else wrong}}}", "thinking_tokens": 3}, r,
                                    set_name=s, row_idx=i, budget=budget, waits=0, config=cfg, config_hash=store.hash))
        store.append(recs)
        write_json(adir / v / "eval" / "manifest.json",
                   {"stage": "eval", "sets": {s: 4 for s in suite}, "limit": 4, "scorer": "strict",
                    "run": {"params": plan[v]["eval"], "upstream": ups}})
    return adir


def test_table_shape(tmp_path):
    answers = {"random": [1, 0, 0, 0, 0, 0, 0, 0], "hard_random": [1, 1, 0, 0, 1, 0, 0, 0],
               "domain": [0, 0, 0, 0, 0, 0, 0, 0], "domain_source": [1, 1, 1, 1, 1, 1, 0, 0]}
    adir = _fake(tmp_path, answers, list(answers))
    table, md = ablation_table(adir)
    assert list(table["variant"]) == ["16 random", "16 hard random", "16 hard domain", "16 hard domain+source", "chance"]
    assert list(table.columns) == ["variant", "select.method", "MedMCQA_validation", "PubMedQA_test", "Average (2 sets)",
                                   "Δ vs random (Average)", "Average vs chance", "answered %", "m1-7B Avg (paper, 10 sets)"]
    long = table.attrs["long"].set_index(["variant", "set"])
    assert len(long) == 4 * 3
    assert long.loc[("domain_source", "MedMCQA_validation"), "acc"] == 1.0
    assert long.loc[("domain_source", "PubMedQA_test"), "acc"] == 0.5
    assert abs(long.loc[("domain_source", "Average"), "diff_vs_reference"] - ((1 - 0.25) + (0.5 - 0)) / 2) < 1e-12
    assert abs(long.loc[("domain", "Average"), "diff_vs_reference"] + 0.125) < 1e-12
    assert table.loc[0, "Δ vs random (Average)"] == "reference"
    assert table.loc[3, "m1-7B Avg (paper, 10 sets)"] == "56.55"
    for text in ("CPU-sized", "SmolLM2-135M is at chance", "differ only in `select.method`", "Paired differences"):
        assert text in md, text
    files = write_ablation(adir, tmp_path / "figs")
    assert [f.name for f in files] == ["ablation.md", "ablation.csv"] and files[0].read_text() == md
    assert len(pd.read_csv(files[1])) == 12


def _cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv, expect", [
    (["--variants", "random,domian"], "--variants: unknown variant 'domian' (did you mean 'domain'?)"),
    (["--variants", "hard_random,domain"], "ablate.reference 'random' is not among the variants"),
    (["-p", "select.method=long"], "-p select.method: the ablation sets it"),
    (["--profile", "nope"], "unknown profile 'nope'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, argv, expect):
    work = tmp_path / "w"
    rc, out, err = _cli(["ablate", "--work", str(work), "--out", str(tmp_path / "figs"), *argv])
    assert rc == 2 and err.startswith("m1 ablate: error: ") and err.count("\n") == 1 and expect in err, err
    assert not work.exists() and not (tmp_path / "figs").exists()


def test_bad_profile_key_is_named(tmp_path):
    prof = tmp_path / "mine.yaml"
    prof.write_text("base: tiny\nablate:\n  variants: [random, hard_random, lenght]\n")
    rc, out, err = _cli(["ablate", "--profile", str(prof), "--work", str(tmp_path / "w")])
    assert rc == 2 and "ablate.variants" in err and "lenght" in err and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()


def test_changed_ablate_key_makes_exactly_its_stages_stale(tmp_path):
    "Resume and staleness come from m1 reproduce's run records: a changed ablate.budgets re-runs eval only."
    from m1.ablate import stage_status
    from m1.reproduce import run_record
    s = ablation_setup("tiny", tmp_path / "w", ["random"])
    vdir, P = s["dir"] / "random", s["profiles"]["random"]
    for st in [*UPSTREAM, *DOWNSTREAM]:                     # a finished variant, as m1 reproduce records it
        man = {"stage": st, "output_id": f"id-{st}"}
        if st in DOWNSTREAM:
            man["run"] = run_record(P, st, s["stage_extra"].get(st), vdir)
        write_json(vdir / st / "manifest.json", man)
    assert stage_status(P, DOWNSTREAM, s["stage_extra"], vdir) == {st: "done" for st in DOWNSTREAM}
    prof = tmp_path / "mine.yaml"
    prof.write_text("base: tiny\nablate:\n  budgets: [16]\n")
    s2 = ablation_setup(str(prof), tmp_path / "w", ["random"])
    got = stage_status(s2["profiles"]["random"], DOWNSTREAM, s2["stage_extra"], vdir)
    assert got["select"] == got["sft_data"] == got["sft"] == "done", got
    assert got["eval"] == "to run: parameters changed since it ran (-p eval.budgets: [32] -> [16])", got
    s3 = ablation_setup("tiny", tmp_path / "w", ["random"], {"sft": {"method": "lora"}})
    got = stage_status(s3["profiles"]["random"], DOWNSTREAM, s3["stage_extra"], vdir)
    assert got["sft"].startswith("to run: parameters changed") and got["eval"].startswith("to run: downstream of sft"), got
