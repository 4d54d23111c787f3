"""The client layer beyond the notebooks: the `transformers serve` backend end to end, and the fault proxy's
seeded schedule. Real servers and sockets, no mocks."""
import collections
import os
import signal
import time

import pytest

from fault_servers import FaultProxy
from m1.client import ChatClient, RequestFailed
from m1.serve import _get, start_server


def test_transformers_backend_round_trip():
    "`transformers serve` on the fp32 folder: ready, answers with a length cap, and its process group is gone after stop."
    with start_server(backend="transformers", threads=1, timeout=300) as srv:
        assert srv.base_url.endswith("/v1") and srv.model.endswith("smollm2-135m-instruct-fp32")
        assert _get(srv.base_url + "/models")[0] == 200
        c = ChatClient.for_server(srv, progress=False, timeout=120)
        r = c.chat(["What is the capital of France?"], temperature=0.0, max_tokens=6)[0]
        assert "Paris" in r["text"] and r["usage"]["completion_tokens"] <= 6, r
        assert r["finish_reason"] in ("stop", "length")
        pid = srv.proc.pid
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def _kinds(seed, n=40):
    plan = {"429": 0.2, "500": 0.2, "400": 0.1}
    # upstream is a closed port: requests that pass are answered 502 by the proxy itself
    with FaultProxy("http://127.0.0.1:9/v1", plan, seed=seed, retry_after=0.01) as px:
        c = ChatClient(px.base_url, "m", max_retries=0, progress=False, concurrency=1)
        for i in range(n):
            with pytest.raises(RequestFailed):
                c.chat([f"q{i}"], max_tokens=1)
        return [k for _, k in px.log], px.injected


def test_fault_schedule_is_seeded():
    a, ia = _kinds(1)
    b, ib = _kinds(1)
    c, _ = _kinds(2)
    assert a == b and ia == ib and a != c
    counts = collections.Counter(a)
    assert counts["ok"] > 0 and all(counts[k] > 0 for k in ("429", "500", "400")), counts
    assert sum(ia.values()) == len(a) - counts["ok"]


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultProxy("http://127.0.0.1:9/v1", ["429", "explode"])
    with pytest.raises(ValueError, match="add up to"):
        FaultProxy("http://127.0.0.1:9/v1", {"429": 0.7, "500": 0.6})
