"""No API key is ever printed or saved, even when a server echoes it.

`fault_servers.LeakyServer` (tests/fault_servers.py) is a loopback OpenAI look-alike whose 500 and 401 error bodies echo the request's
`Authorization` header. Every way m1 talks to a server is pointed at it with a fake key: `m1 eval --base-url`,
`m1 ask --url`, the distill stage run by `m1 reproduce` (papermill writes the executed notebook under runs/),
and the domain classifier. Then everything the run printed (stdout, stderr) and wrote (its whole folder: work,
runs, out, cache) is searched for the key: zero hits. Each test also checks that the server really received the
key, so a run that never sent it cannot pass by accident.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from fault_servers import LeakyServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-SECRET123456"
M1 = str(Path(sys.executable).parent / "m1")
Q = "Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C"


def _env(d: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(M1_WORK=str(d / "work"), M1_RUNS=str(d / "runs"), M1_FIGURES=str(d / "figures"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="error", **extra)
    return env


def _run(cmd: list[str], d: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_no_key(p: subprocess.CompletedProcess, d: Path, key: str = KEY) -> None:
    "The key is in nothing printed and in no file under `d` (bytes, so binary files count too)."
    for name, text in (("stdout", p.stdout), ("stderr", p.stderr)):
        assert key not in text, f"the key is in {name}:\n{text[-2000:]}"
    hits = [str(f) for f in d.rglob("*") if f.is_file() and key.encode() in f.read_bytes()]
    assert not hits, f"the key was written to {hits}"


def _argv_eval(url: str, d: Path) -> list[str]:
    return [M1, "eval", "--base-url", url, "--model", "smollm2-135m-instruct", "--sets", "MedQA_USLME_test",
            "--limit", "1", "--budgets", "16", "--waits", "0", "--out", str(d / "out"), "--no-progress"]


def _argv_ask(url: str, d: Path) -> list[str]:
    return [M1, "ask", Q, "--url", url, "--model", "smollm2-135m-instruct", "--budget", "8"]


# name: (the LeakyServer's number of 500s before its 401s, the command, the key's variable)
CLI_RUNS = {"eval_base_url": (1, _argv_eval, "M1_API_KEY"), "ask_url": (1, _argv_ask, "M1_API_KEY"),
            "openai_key_to_loopback": (0, _argv_ask, "OPENAI_API_KEY")}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict:
    """The one-command runs of `CLI_RUNS`, each against its own LeakyServer in its own folder, started together:
    each is mostly interpreter and tokenizer start-up, so they overlap instead of queueing.
    Returns {name: (CompletedProcess, folder, LeakyServer)}."""
    out, running = {}, {}
    with contextlib.ExitStack() as stack:
        for name, (n500, argv, key_var) in CLI_RUNS.items():
            d = tmp_path_factory.mktemp(name)
            ls = stack.enter_context(LeakyServer(n500=n500))
            running[name] = (d, ls, subprocess.Popen(argv(ls.base_url, d), cwd=d, env=_env(d, **{key_var: KEY}),
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                     stdin=subprocess.DEVNULL))
        for name, (d, ls, proc) in running.items():
            try:
                stdout, stderr = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            out[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), d, ls)
    return out


def test_eval_base_url(cli_runs):
    p, d, ls = cli_runs["eval_base_url"]
    assert f"Bearer {KEY}" in ls.seen, ls.seen
    assert p.returncode == 2 and "401" in p.stderr, p.stderr[-2000:]
    assert_no_key(p, d)


def test_ask_url(cli_runs):
    p, d, ls = cli_runs["ask_url"]
    assert f"Bearer {KEY}" in ls.seen, ls.seen
    assert p.returncode == 2 and "401" in p.stderr, p.stderr[-2000:]
    assert_no_key(p, d)


def test_openai_key_never_goes_to_loopback(cli_runs):
    "One policy for both clients: OPENAI_API_KEY is not sent to a server on this machine."
    p, d, ls = cli_runs["openai_key_to_loopback"]
    assert ls.seen and set(ls.seen) == {"Bearer EMPTY"}, ls.seen
    assert_no_key(p, d)


def test_distill_stage_in_reproduce(tmp_path):
    "A reproduce stage whose requests are refused: the stage-failure line and the executed notebook hold no key."
    from datasets import Dataset  # noqa: F401  (the stage input is a real Dataset, made by m1's own loader)
    from m1.core import save_stage
    from m1.data import load_demo
    work = tmp_path / "work"
    save_stage(load_demo(limit=2), "dedup", root=work)
    with LeakyServer(n500=1) as ls:
        prof = yaml.safe_load((ROOT / "m1" / "profiles" / "tiny.yaml").read_text())
        prof["server"].update(backend="external", base_urls=[ls.base_url])
        prof["distill"].update(teachers=["leaky"], models={"leaky": {"model": ls.model, "max_tokens": 8}},
                               max_retries=1, limit=2, concurrency=1)
        if "teacher_on" in prof["distill"]:
            prof["distill"]["teacher_on"] = "all"
        prof["filter"].update(small_models=[], teacher="leaky")
        (tmp_path / "leaky.yaml").write_text(yaml.safe_dump(prof))
        p = _run([M1, "reproduce", "--profile", str(tmp_path / "leaky.yaml"), "--work", str(work), "--only", "distill",
                  "--run-id", "leak"], tmp_path, _env(tmp_path, M1_API_KEY=KEY, M1_CACHE=str(tmp_path / "cache")))
    assert f"Bearer {KEY}" in ls.seen, (ls.seen, p.stderr[-2000:])
    assert p.returncode in (1, 2) and "stage 'distill' failed in 04_distill.ipynb" in p.stderr, p.stderr[-2000:]
    nb = tmp_path / "runs" / "leak" / "04_distill.ipynb"
    assert nb.exists() and "401" in nb.read_text(), "the failed notebook is kept, with the error in it"
    assert_no_key(p, tmp_path)


def test_domain_classifier(tmp_path):
    "The classifier's client raises an error that names the refusal, not the key; its cache holds none either."
    with LeakyServer(n500=1) as ls:
        code = textwrap.dedent(f"""
            from m1.core import load_profile
            from m1.data import load_demo
            from m1.domains import domains_stage
            cfg = load_profile("tiny", {{"domains": {{"base_url": {ls.base_url!r}, "classifier": {ls.model!r}}}}}).domains
            try:
                domains_stage(load_demo(limit=2), dict(cfg))
            except Exception as e:
                print(type(e).__name__, e)
                raise SystemExit(3)
            """)
        p = _run([sys.executable, "-c", code], tmp_path, _env(tmp_path, M1_API_KEY=KEY, M1_CACHE=str(tmp_path / "cache")))
    assert f"Bearer {KEY}" in ls.seen, (ls.seen, p.stderr[-2000:])
    assert p.returncode == 3 and "401" in p.stdout, (p.stdout[-2000:], p.stderr[-2000:])
    assert_no_key(p, tmp_path)
