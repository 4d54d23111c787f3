"""Eval files as users bring them: every fixture shape of tests/fixtures/eval_files loads through
`m1.data.load_eval_suite` with the right gold answers, and every bad fixture fails with one line naming
the file, the row and the field. Also m1's eval file (tests/fixtures/hub/m1_eval_data.json) as a suite.
The hub is never contacted (conftest sets HF_HUB_OFFLINE; every call here passes hub=False or uses files)."""
import json
from pathlib import Path

import pytest

from m1.data import (LETTERS, M1_EVAL_SETS, EvalUnavailable, answer_text, load_eval_suite, load_file,
                     suite_specs)

FIX = Path(__file__).resolve().parent / "fixtures"
EF = FIX / "eval_files"
M1FILE = FIX / "hub" / "m1_eval_data.json"


def _gold_texts(raw_rows, options_of, gold_of):
    return [gold_of(r, options_of(r)) for r in raw_rows]


# file -> the gold option texts, worked out by hand from each fixture (independently of the loader)
EXPECTED = {
    "cardiology_text.json": ["Sacubitril-valsartan", "An oral anticoagulant",
                             "Ejection systolic murmur radiating to the carotids"],
    "nephrology_letter.jsonl": ["Hyperphosphataemia", "Fractional excretion of sodium below 1%", "Minimal change disease"],
    "endocrine_lettered.json": ["Overnight 1 mg dexamethasone suppression test", "Primary hyperparathyroidism",
                                "Insulin degludec"],
    "infectious_label.jsonl": ["Streptococcus pneumoniae", "Artemether-lumefantrine",
                               "HIV-1/HIV-2 differentiation immunoassay"],
    "mixed_width_answer_idx.json": ["yes", "Ultrasound", "Measles-mumps-rubella"],
    "nerves_26.jsonl": ["Abducens", "Radial", "Glossopharyngeal", "Common peroneal"],
    "haematology_table.csv": ["Microcytosis with low ferritin", "Idarucizumab", "Reed-Sternberg cell"],
    "dermatology_options_column.csv": ["Comedone", "Topical permethrin"],
}


@pytest.mark.parametrize("fname", sorted(EXPECTED))
def test_each_shape_loads_with_the_right_gold(fname):
    suite = load_eval_suite([str(EF / fname)], hub=False)
    name = Path(fname).stem
    assert list(suite) == [name]
    ds = suite[name]
    assert [answer_text(r) for r in ds] == EXPECTED[fname]
    assert set(ds["source"]) == {name}
    for r in ds:                                   # the schema: clean option texts, a valid letter
        assert 2 <= len(r["options"]) <= 26 and r["answer"] in LETTERS[:len(r["options"])]
        assert all(o == o.strip() and o for o in r["options"])


def test_option_counts_and_letters():
    s = load_eval_suite([str(EF / f) for f in ("mixed_width_answer_idx.json", "nerves_26.jsonl",
                                                "haematology_table.csv", "endocrine_lettered.json")], hub=False)
    assert [len(o) for o in s["mixed_width_answer_idx"]["options"]] == [2, 6, 3]
    assert [len(o) for o in s["nerves_26"]["options"]] == [26] * 4
    assert s["nerves_26"]["answer"] == ["F", "N", "I", "W"]
    assert [len(o) for o in s["haematology_table"]["options"]] == [4, 5, 4]   # an empty E cell is no option
    assert s["endocrine_lettered"][1]["options"][0] == "Malignancy"            # "A. " prefixes stripped


def test_sets_file_and_order_and_limit():
    specs = f"{EF / 'two_sets.json'}, {EF / 'cardiology_text.json'} ,MedQA_USLME_test"
    assert suite_specs(specs) == [str(EF / "two_sets.json"), str(EF / "cardiology_text.json"), "MedQA_USLME_test"]
    s = load_eval_suite(specs, limit=2, hub=False)
    assert list(s) == ["Pulmonology", "Neurology", "cardiology_text", "MedQA_USLME_test"]
    assert [len(d) for d in s.values()] == [2, 1, 2, 2]
    assert load_eval_suite(specs, limit=5000, hub=False)["MedQA_USLME_test"].num_rows == 1273   # limit > rows: all


def test_m1_eval_file_as_a_suite():
    raw = json.loads(M1FILE.read_text())
    s = load_eval_suite([str(M1FILE)], hub=False)
    assert list(s) == M1_EVAL_SETS == list(raw)
    for name, ds in s.items():
        assert [answer_text(r) for r in ds] == [x["answer"] for x in raw[name]]
    # by name, through the configured local copy (the five local ones come from M1_DATA/eval)
    by_name = load_eval_suite(["Lancet", "NEJM", "PubMedQA_test"], limit=2, eval_file=M1FILE, hub=False)
    assert list(by_name) == ["Lancet", "NEJM", "PubMedQA_test"]
    assert by_name["Lancet"]["question"] == [x["question"] for x in raw["Lancet"][:2]]
    assert len(load_file(M1FILE)) == sum(map(len, raw.values()))


@pytest.mark.parametrize("fname, needle", [
    ("letter_text_disagree.json", "letter_text_disagree.json row 1: field 'answer': 'Vitamin D' means option C "
                                  "but field 'answer_idx' says B"),
    ("gold_not_an_option.jsonl", "gold_not_an_option.jsonl row 2: field 'answer': 'Retinol' is neither"),
    ("lettered_wrong_text.json", "lettered_wrong_text.json row 0: field 'answer': 'C. Vitamin C\\n' names option C"),
    ("no_gold.json", "no_gold.json row 0: field 'answer': no gold answer"),
    ("one_option.jsonl", "one_option.jsonl row 0: field 'options': needs 2 to 26 options, got 1"),
    ("broken_line.jsonl", "broken_line.jsonl row 1: bad JSON"),
    ("empty.json", "empty.json: no rows"),
    ("empty_set.json", "empty_set.json set 'Renal': no rows"),
    ("label_out_of_range.csv", "label_out_of_range.csv row 0: field 'label': '7' is not a 0-based index"),
    ("options_bad_json.csv", "options_bad_json.csv row 0: field 'options': not valid JSON"),
    ("options_empty.csv", "options_empty.csv row 0: field 'options': needs 2 to 26 options, got 0"),
])
def test_bad_files_name_file_row_field(fname, needle):
    # a good file first: nothing is returned when a later file is bad
    with pytest.raises(ValueError) as e:
        load_eval_suite([str(EF / "cardiology_text.json"), str(EF / "bad" / fname)], hub=False)
    msg = str(e.value)
    assert needle in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("specs, limit, needle", [
    ("MedQA_USLME_test", 0, "limit must be a positive"),
    ("MedQA_USLME_test", -3, "limit must be a positive"),
    ("MedQA_USLME_test", "5", "limit must be a positive"),
    ("", None, "empty name"),
    ([], None, "empty name"),
    ("MedQA_USLME_test, ,NEJM", None, "empty name"),
    ("Lancet2", None, "not a known set"),
    ("tests/fixtures/eval_files/nope.csv", None, "no such file"),
    (str(EF), None, "must end in .json, .jsonl, .csv"),
    ("owner/some-eval:test", None, "hub is not allowed"),
    (f"{EF / 'cardiology_text.json'},{EF / 'cardiology_text.json'}", None, "already comes from"),
])
def test_bad_specs(specs, limit, needle):
    with pytest.raises(ValueError) as e:
        load_eval_suite(specs, limit=limit, hub=False)
    assert needle in str(e.value), str(e.value)


def test_unavailable_set_is_reported_not_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("M1_EVAL_DATA", raising=False)
    with pytest.raises(EvalUnavailable) as e:   # NEJM exists neither in M1_DATA/eval nor in a local copy
        load_eval_suite("MedQA_USLME_test,NEJM", hub=False)
    assert "eval set 'NEJM'" in str(e.value)
    monkeypatch.setenv("M1_EVAL_DATA", str(M1FILE))
    assert list(load_eval_suite("MedQA_USLME_test,NEJM", limit=1, hub=False)) == ["MedQA_USLME_test", "NEJM"]
