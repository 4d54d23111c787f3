"""paper-smoke is the paper profile with only sizes and endpoints swapped (issue 11): any other difference fails here."""
from m1.core import load_profile

SIZES = {"data.limit", "data.eval_limit", "select.n", "eval.budgets", "eval.waits", "eval.wait_budget",
         "eval.answer_tokens", "eval.batch_size", "distill.concurrency", "distill.timeout", "domains.max_tokens"}
ENDPOINTS = {"name", "model", "data.sources", "data.hub_mirror", "data.eval_file", "server.backend",
             "server.base_urls", "server.parallel", "server.prompt_cache", "domains.classifier", "domains.base_url",
             "domains.backend"}
FORCED = {"domains.constrain", "domains.temperature"}   # SmolLM2 writes no valid MeSH code freely (see the profile)


def _leaves(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_leaves(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def test_paper_smoke_differs_from_paper_only_in_sizes_and_endpoints():
    paper, smoke = _leaves(load_profile("paper")), _leaves(load_profile("paper-smoke"))
    assert set(paper) <= set(smoke) | {k for k in paper if k.startswith("distill.models.")}
    changed = {k for k in set(paper) | set(smoke) if paper.get(k) != smoke.get(k)}
    per_model = {k for k in changed if k.startswith("distill.models.")}
    assert {k.rsplit(".", 1)[1] for k in per_model} <= {"model", "max_tokens"}, per_model   # which model, how long
    other = changed - per_model
    assert other <= SIZES | ENDPOINTS | FORCED, sorted(other - SIZES - ENDPOINTS - FORCED)
    assert smoke["sft.precision"] == paper["sft.precision"] == "bf16" and smoke["eval.scorer"] == "m1"
    assert smoke["eval.backend"] == "server" and smoke["data.eval_sets"] == paper["data.eval_sets"]
