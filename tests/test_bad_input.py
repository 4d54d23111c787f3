"""Bad input through the real `m1` command (subprocesses, real exit codes), table-driven.

Every case must end with exit status 2, exactly ONE line on stderr that names the culprit (flag, file, key, row)
and no traceback, and must write nothing: each case runs in its own folder (cwd, work, runs, figures, out all
inside it) whose files are compared before and after. Every case fails before a model is loaded, so each takes
seconds; the cases run a few at a time (a session fixture starts them all on first use).

Cases marked `needs=...` test what another part of the project validates (eval's grid and files: W3b, `m1 ask`:
W3a); they are real cases, not expected failures.
"""
from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

# With pytest-xdist (`make test` runs two workers), every case stays on one worker: the session fixture below runs
# the selected cases once, for that worker.
pytestmark = pytest.mark.xdist_group("bad_input")

ROOT = Path(__file__).resolve().parent.parent
M1 = [str(Path(sys.executable).parent / "m1")] if (Path(sys.executable).parent / "m1").exists() else \
    [sys.executable, "-c", "import sys; from m1.cli import main; sys.exit(main())"]
TINY = yaml.safe_load((ROOT / "m1" / "profiles" / "tiny.yaml").read_text())
Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DOWN = f"http://127.0.0.1:{_free_port()}/v1"          # nothing listens there


class _NotOpenAI(http.server.BaseHTTPRequestHandler):
    "A web server that is not an OpenAI API: every path is an HTML 404."
    def do_GET(self):
        body = b"<html><body>Not Found</body></html>"
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET

    def log_message(self, *a):
        pass


_web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotOpenAI)
_web.daemon_threads = True
threading.Thread(target=_web.serve_forever, daemon=True).start()
NOT_OPENAI = f"http://127.0.0.1:{_web.server_address[1]}/v1"


def profile(d: Path, edit: Callable[[dict], None] | None = None, text: bytes | None = None, name="p.yaml") -> str:
    "Write a profile into the case folder: tiny edited by `edit`, or raw bytes."
    p = d / name
    if text is not None:
        p.write_bytes(text)
    else:
        prof = json.loads(json.dumps(TINY))
        edit(prof)
        p.write_text(yaml.safe_dump(prof, sort_keys=False))
    return str(p)


@dataclass
class Case:
    id: str
    argv: Callable[[Path], list[str]]          # built inside the case folder
    says: list[str]                            # substrings of the one stderr line
    needs: str = ""                            # the helper whose validation this case exercises, if not W5's
    env: dict = field(default_factory=dict)


def _foreign_run(d: Path) -> list[str]:
    (d / "runs" / "mine").mkdir(parents=True)
    (d / "runs" / "mine" / "02_merge.ipynb").write_text("my own notebook, not papermill's")
    return ["reproduce", "--work", str(d / "work"), "--run-id", "mine", "--until", "merge"]


def _figures_foreign(d: Path) -> list[str]:
    (d / "w" / "merge").mkdir(parents=True)
    (d / "w" / "merge" / "manifest.json").write_text(json.dumps({"stage": "merge", "rows": 3}))
    (d / "figs").mkdir()
    (d / "figs" / "stage_counts.md").write_text("my notes, not m1's table")
    return ["figures", "--work", str(d / "w"), "--out", str(d / "figs")]


def _mkdir(d: Path, name: str) -> str:
    (d / name).mkdir()
    return str(d / name)


def _file(d: Path, name: str, data: bytes = b"x") -> str:
    (d / name).write_bytes(data)
    return str(d / name)


def _foreign_store(d: Path) -> list[str]:
    (d / "out").mkdir()
    (d / "out" / "results.jsonl").write_text('{"another": "tool"}\n')
    return ["eval", "--sets", "MedQA_USLME_test", "--limit", "1", "--budgets", "16", "--waits", "0",
            "--out", str(d / "out"), "--no-progress"]


W = lambda d: ["--work", str(d / "work")]
CASES = [
    # ---- m1 reproduce: flags, -p parameters, profiles (checked before any stage runs) ----
    Case("reproduce-p-misspelled-until-merge", lambda d: ["reproduce", *W(d), "--until", "merge", "-p", "eval.limt=2"],
         ["-p: unknown key eval.limt (did you mean eval.limit?)"]),
    Case("reproduce-p-budgets-not-list", lambda d: ["reproduce", *W(d), "--until", "merge", "-p", "eval.budgets=32"],
         ["eval.budgets: expected a list"]),
    Case("reproduce-p-method-typo", lambda d: ["reproduce", *W(d), "-p", "sft.method=lroa"], ["sft.method", "full, lora"]),
    Case("reproduce-p-limit-word", lambda d: ["reproduce", *W(d), "-p", "distill.limit=many"], ["distill.limit", '"many"']),
    Case("reproduce-p-unknown-stage", lambda d: ["reproduce", *W(d), "-p", "mrege.sources=[local]"],
         ["unknown stage 'mrege'", "did you mean 'merge'"]),
    Case("reproduce-p-bad-yaml", lambda d: ["reproduce", *W(d), "-p", "merge.sources=[local"], ["merge.sources=[local", "not valid YAML"]),
    Case("reproduce-p-no-value", lambda d: ["reproduce", *W(d), "-p", "merge.sources"], ["-p 'merge.sources'", "KEY=VALUE"]),
    Case("reproduce-p-twice", lambda d: ["reproduce", *W(d), "-p", "eval.limit=2", "-p", "eval.limit=3"], ["given twice"]),
    Case("reproduce-until-unknown", lambda d: ["reproduce", *W(d), "--until", "nope"], ["--until nope: unknown stage"]),
    Case("reproduce-only-empty-item", lambda d: ["reproduce", *W(d), "--only", "merge,,dedup"], ["--only 'merge,,dedup'"]),
    Case("reproduce-unknown-profile", lambda d: ["reproduce", *W(d), "--profile", "nope"], ["unknown profile 'nope'"]),
    Case("profile-seed-abc", lambda d: ["reproduce", *W(d), "--profile", profile(d, lambda p: p.update(seed="abc"))],
         ['seed: expected an integer, got "abc"']),
    Case("profile-budgets-32", lambda d: ["reproduce", *W(d), "--profile", profile(d, lambda p: p["eval"].update(budgets=32))],
         ["eval.budgets: expected a list of (an integer >= 1), got 32"]),
    Case("profile-bootstrap-many", lambda d: ["reproduce", *W(d), "--profile",
                                              profile(d, lambda p: p["eval"].update(bootstrap="many"))],
         ['eval.bootstrap: expected an integer >= 1, got "many"']),
    Case("profile-eval-mach", lambda d: ["reproduce", *W(d), "--until", "merge", "--profile",
                                         profile(d, lambda p: p["eval"].update(mach="first"))],
         ["unknown key eval.mach (did you mean eval.match?)"]),
    Case("profile-missing-key", lambda d: ["reproduce", *W(d), "--profile", profile(d, lambda p: p["dedup"].pop("threshold"))],
         ["missing key dedup.threshold"]),
    Case("profile-wait-budget-0", lambda d: ["reproduce", *W(d), "--profile",
                                             profile(d, lambda p: p["eval"].update(wait_budget=0))],
         ["eval.wait_budget: expected an integer >= 1, got 0"]),
    Case("profile-reproduce-section-typo", lambda d: ["reproduce", *W(d), "--profile",
                                                      profile(d, lambda p: p["reproduce"]["eval"].update(limt=2))],
         ["unknown key reproduce.eval.limt (did you mean reproduce.eval.limit?)"]),
    Case("profile-model-label-typo", lambda d: ["reproduce", *W(d), "--profile", profile(
        d, lambda p: p["distill"]["models"]["smol-greedy"].update(max_token=8))],
         ["unknown key distill.models.smol-greedy.max_token (did you mean distill.models.smol-greedy.max_tokens?)"]),
    Case("profile-yaml-syntax", lambda d: ["reproduce", *W(d), "--profile", profile(d, text=b"seed: 42\neval: {budgets: [1, 2}\n")],
         ["p.yaml: YAML syntax error at line 2"]),
    Case("profile-not-utf8", lambda d: ["reproduce", *W(d), "--profile", profile(d, text=b"name: caf\xe9\n")],
         ["p.yaml: not UTF-8 text (byte 0xe9 on line 1)"]),
    Case("profile-empty-file", lambda d: ["reproduce", *W(d), "--profile", profile(d, text=b"")],
         ["expected a mapping of sections"]),
    Case("profile-is-directory", lambda d: ["reproduce", *W(d), "--profile", _mkdir(d, "dir.yaml")],
         ["dir.yaml is a folder, not a file"]),
    Case("reproduce-work-is-file", lambda d: ["reproduce", "--work", _file(d, "work.txt"), "--until", "merge"],
         ["work.txt is a file, not a folder"]),
    Case("reproduce-run-id-slash", lambda d: ["reproduce", *W(d), "--run-id", "a/b"], ["--run-id 'a/b'"]),
    Case("reproduce-foreign-run-notebook", _foreign_run, ["02_merge.ipynb exists and was not written by m1 reproduce"]),
    Case("reproduce-bad-flag", lambda d: ["reproduce", "--untill", "merge"], ["--untill"]),
    # ---- m1 figures ----
    Case("figures-work-missing", lambda d: ["figures", "--work", str(d / "nowhere")], ["--work", "nowhere: no such folder"]),
    Case("figures-work-is-file", lambda d: ["figures", "--work", _file(d, "w.txt")], ["w.txt: not a folder"]),
    Case("figures-nothing-to-draw", lambda d: ["figures", "--work", _mkdir(d, "w"), "--out", str(d / "figs")], ["nothing to draw"]),
    Case("figures-out-is-file", lambda d: ["figures", "--work", _mkdir(d, "w"), "--out", _file(d, "figs.txt")],
         ["figs.txt is a file, not a folder"]),
    Case("figures-foreign-file", _figures_foreign, ["stage_counts.md was not written by m1", "nothing was written"]),
    Case("figures-unknown-profile", lambda d: ["figures", "--profile", "nope"], ["unknown profile 'nope'"]),
    # ---- m1 demo ----
    Case("demo-limit-0", lambda d: ["demo", "--limit", "0"], ["--limit 0: must be at least 1"]),
    Case("demo-limit-negative", lambda d: ["demo", "--limit", "-3"], ["--limit -3: must be at least 1"]),
    Case("demo-batch-size-0", lambda d: ["demo", "--batch-size", "0"], ["--batch-size 0"]),
    Case("demo-max-new-tokens-0", lambda d: ["demo", "--max-new-tokens", "0"], ["--max-new-tokens 0"]),
    Case("demo-limit-word", lambda d: ["demo", "--limit", "x"], ["argument --limit: invalid int value: 'x'"]),
    Case("demo-model-not-a-name", lambda d: ["demo", "--model", "not-a-model"], ["'not-a-model' is not a registry name"]),
    Case("demo-model-folder-without-config", lambda d: ["demo", "--model", _mkdir(d, "mymodel")], ["mymodel", "config.json"]),
    Case("demo-model-offline-hub", lambda d: ["demo", "--model", "nosuchorg/nosuchmodel"], ["nosuchorg/nosuchmodel"]),
    # ---- m1 train ----
    Case("train-set-method-typo", lambda d: ["train", "--work", str(d / "work"), "--set", "method=lroa"], ["sft.method"]),
    Case("train-set-unknown-key", lambda d: ["train", "--work", str(d / "work"), "--set", "learning_rat=1e-4"],
         ["sft.learning_rat", "did you mean"]),
    Case("train-set-no-value", lambda d: ["train", "--work", str(d / "work"), "--set", "epochs"], ["epochs"]),
    Case("train-data-missing", lambda d: ["train", "--work", str(d / "work"), "--data", str(d / "nodata")], ["--data", "nodata"]),
    Case("train-profile-yaml-syntax", lambda d: ["train", "--profile", profile(d, text=b"sft: [\n")], ["YAML syntax error"]),
    # ---- m1 eval (grid and files: W3b) ----
    Case("eval-budgets-word", lambda d: ["eval", "--budgets", "16,abc", "--out", str(d / "out")], ["budgets", "abc"], "W3b"),
    Case("eval-limit-negative", lambda d: ["eval", "--limit", "-3", "--out", str(d / "out")], ["--limit", "-3"], "W3b"),
    Case("eval-wait-budget-0", lambda d: ["eval", "--wait-budget", "0", "--out", str(d / "out")], ["--wait-budget"], "W3b"),
    Case("eval-batch-size-0", lambda d: ["eval", "--batch-size", "0", "--out", str(d / "out")], ["--batch-size"], "W3b"),
    Case("eval-answer-tokens-0", lambda d: ["eval", "--answer-tokens", "0", "--out", str(d / "out")], ["--answer-tokens"], "W3b"),
    Case("eval-unknown-set", lambda d: ["eval", "--sets", "MedQA", "--out", str(d / "out")], ["MedQA"]),
    Case("eval-profile-typo", lambda d: ["eval", "--out", str(d / "out"), "--profile",
                                         profile(d, lambda p: p["eval"].update(mach="first"))], ["eval.mach"]),
    Case("eval-set-file-empty-list", lambda d: ["eval", "--sets", _file(d, "empty.json", b"[]"), "--out", str(d / "out")],
         ["empty.json"], "W3b"),
    Case("eval-foreign-results-store", _foreign_store, ["results.jsonl"], "W3b"),
    Case("eval-server-down", lambda d: ["eval", "--base-url", DOWN, "--model", "smollm2-135m-instruct", "--sets",
                                        "MedQA_USLME_test", "--limit", "1", "--budgets", "16", "--waits", "0",
                                        "--out", str(d / "out"), "--no-progress"], [DOWN]),
    Case("eval-not-openai", lambda d: ["eval", "--base-url", NOT_OPENAI, "--model", "smollm2-135m-instruct", "--sets",
                                       "MedQA_USLME_test", "--limit", "1", "--budgets", "16", "--waits", "0",
                                       "--out", str(d / "out"), "--no-progress"], [NOT_OPENAI, "404"]),
    Case("eval-base-url-not-url", lambda d: ["eval", "--base-url", "localhost:8000", "--out", str(d / "out")],
         ["localhost:8000"], "W3b"),
    # ---- m1 ask (argument checks before the model loads: W3a) ----
    Case("ask-empty-question", lambda d: ["ask", ""], ["question"], "W3a"),
    Case("ask-budget-negative", lambda d: ["ask", Q, "--budget", "-1"], ["--budget"], "W3a"),
    Case("ask-waits-negative", lambda d: ["ask", Q, "--waits", "-1"], ["--waits"], "W3a"),
    Case("ask-server-down", lambda d: ["ask", Q, "--url", DOWN, "--model", "smollm2-135m-instruct", "--budget", "8"], [DOWN]),
    Case("ask-not-openai", lambda d: ["ask", Q, "--url", NOT_OPENAI, "--model", "smollm2-135m-instruct", "--budget", "8"], [NOT_OPENAI, "404"]),
    Case("ask-url-not-url", lambda d: ["ask", Q, "--url", "ftp://x", "--model", "smollm2-135m-instruct", "--budget", "8"], ["ftp://x"], "W3a"),
    # ---- the command itself ----
    Case("unknown-command", lambda d: ["frobnicate"], ["unknown command 'frobnicate'"]),
]


def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*")}


@dataclass
class Result:
    argv: list
    rc: int
    out: str
    err: str
    before: dict
    after: dict
    seconds: float


def _run(case: Case, base: Path) -> Result:
    d = base / case.id
    d.mkdir(parents=True)
    argv = case.argv(d)
    before = _snapshot(d)
    env = {**os.environ, "M1_WORK": str(d / "work"), "M1_RUNS": str(d / "runs"), "M1_FIGURES": str(d / "figures"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore", **case.env}
    env.pop("M1_DEBUG", None)
    t = time.time()
    p = subprocess.run([*M1, *argv], cwd=d, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return Result(argv, p.returncode, p.stdout, p.stderr, before, _snapshot(d), time.time() - t)


@pytest.fixture(scope="session")
def results(request, tmp_path_factory):
    "Run every selected case, three at a time (each is mostly interpreter start-up and imports)."
    base = tmp_path_factory.mktemp("bad_input")
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)}
    todo = [c for c in CASES if c.id in wanted]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip([c.id for c in todo], pool.map(lambda c: _run(c, base), todo)))


def test_enough_cases():
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, results):
    r = results[case.id]
    where = f"m1 {' '.join(r.argv)} (exit {r.rc}, {r.seconds:.1f}s)" + (f" [validated by {case.needs}]" if case.needs else "")
    lines = [x for x in r.err.splitlines() if x.strip()]
    assert "Traceback" not in r.err + r.out, f"{where}: a traceback\n{r.err[-3000:]}"
    assert len(lines) == 1, f"{where}: {len(lines)} stderr lines, expected one:\n{r.err[-3000:]}"
    assert r.rc == 2, f"{where}: {lines}"
    for s in case.says:
        assert s in lines[0], f"{where}: {s!r} not in {lines[0]!r}"
    assert r.after == r.before, f"{where}: wrote {sorted(set(r.after) - set(r.before))} changed " \
                                f"{sorted(k for k in r.before if r.after.get(k) != r.before[k])}"


# ---- nothing silently misconfigured: the schema, the profiles and the code agree ----

def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix == "distill.models.":
            yield from (f"{prefix}{k}.{kk}" for kk in v)          # model labels are names, their keys are keys
        elif isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _code() -> str:
    "Every line of m1's code (the package and the notebooks' code cells), comments cut."
    texts = [p.read_text() for p in sorted((ROOT / "m1").glob("*.py")) if p.name != "_modidx.py"]
    for p in sorted((ROOT / "nbs").glob("*.ipynb")):
        texts += ["".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"]
    return "\n".join(line.split("  #")[0] for t in texts for line in t.splitlines() if not line.lstrip().startswith("#"))


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_every_profile_key_is_read(name):
    "Issue 11: a key no code reads is silent misconfiguration. Each leaf key must be read somewhere (attribute,"
    " subscript or .get, keyword or a quoted name); none is excluded."
    import re
    code = _code()
    prof = yaml.safe_load((ROOT / "m1" / "profiles" / f"{name}.yaml").read_text())
    unread = [k for k in _leaves(prof) if k.split(".")[0] != "reproduce"   # stage parameters: checked in 14_reproduce
              and not re.search(rf"(\.{re.escape(k.rsplit('.', 1)[-1])}\b|['\"]{re.escape(k.rsplit('.', 1)[-1])}['\"]|"
                                rf"\b{re.escape(k.rsplit('.', 1)[-1])}\s*=(?!=))", code)]
    assert not unread, f"profile {name}: keys read by no code: {unread}"


def test_schema_and_profiles_agree():
    "Both profiles load (every key known and typed), and they have the same keys."
    from m1.core import load_profile, load_schema, schema_keys
    tiny, paper = load_profile("tiny"), load_profile("paper")
    strip = lambda ks: {k for k in ks if not k.startswith(("distill.models.", "reproduce"))}
    assert strip(_leaves(tiny)) == strip(_leaves(paper)), strip(_leaves(tiny)) ^ strip(_leaves(paper))
    known = {k for k in schema_keys(load_schema()) if not k.startswith(("distill.models.", "reproduce"))}
    assert known == strip(_leaves(tiny)), f"schema keys without a profile value: {sorted(known - strip(_leaves(tiny)))}"


def test_schema_choices_match_the_code():
    "Where the code names its choices, the schema offers the same words (else a valid value could be refused)."
    import importlib
    from m1.core import load_schema, parse_spec
    S = load_schema()
    pairs = {"sft.method": ("m1.sft", "METHODS"), "sft.precision": ("m1.sft", "PRECISIONS"),
             "sft.too_long": ("m1.sft", "TOO_LONG"), "select.method": ("m1.select", "METHODS"),
             "dedup.checks": ("m1.dedup", "REASONS"), "distill.teacher_on": ("m1.distill", "TEACHER_ON"),
             "filter.grader": ("m1.grade", "GRADERS"), "eval.mode": ("m1.evaluate", "MODES"),
             "eval.scorer": ("m1.evaluate", "SCORERS"), "eval.wait_spacing": ("m1.budget", "WAIT_SPACINGS"),
             "eval.backend": ("m1.evaluate", "EVAL_BACKENDS"), "data.shuffle_scope": ("m1.merge", "SHUFFLE_SCOPES"),
             "data.pubmedqa_format": ("m1.data", "PUBMEDQA_FORMATS"), "dedup.eval_unavailable": ("m1.dedup", "EVAL_UNAVAILABLE")}
    for key, (mod, const) in pairs.items():
        node = S
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values = getattr(importlib.import_module(mod), const, None)
        if node is None or values is None:
            continue                                   # the key or constant is not (yet) in this checkout
        _, alts = parse_spec(str(node))
        if alts and alts[0][0] == "list":
            alts = alts[0][1][1]
        words = {a[1] for a in alts if a[0] == "word"}
        assert words == set(values), f"{key}: schema {sorted(words)} vs {mod}.{const} {sorted(values)}"
