"""Test tools for the HTTP client (not part of the package): a fault-injecting proxy and a server that leaks the key.

`FaultProxy` sits between a client and a real OpenAI-compatible server and breaks requests on purpose (429 with
Retry-After, 500, timeouts, truncated or broken bodies, dropped connections, empty answers), so the retry logic
is tested against a real server rather than a mock. `LeakyServer` is an OpenAI look-alike whose error bodies echo
the request's `Authorization` header, for the secret-redaction tests. Standard library only.
Import from a notebook or a script: `sys.path.insert(0, str(m1.core.repo_root() / "tests"))`.
"""
from __future__ import annotations

import collections
import contextlib
import http.client
import json
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Sequence
from urllib.parse import urlsplit

__all__ = ["FAULT_KINDS", "FaultProxy", "LeakyServer"]


FAULT_KINDS = ("429", "500", "timeout", "truncate", "bad_json", "drop", "400", "empty")


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # faults break sockets on purpose: stay quiet
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.server.fault_proxy._handle(self)

    def do_POST(self):
        self.server.fault_proxy._handle(self)


class FaultProxy:
    "An HTTP proxy on loopback that injects 429/500/timeouts/truncated bodies/dropped connections."

    def __init__(self, upstream: str, plan: Sequence[str] | dict[str, float] | None = None, seed: int = 0,
                 retry_after: float = 1.0, hang: float = 30.0, port: int = 0, methods: tuple = ("POST",),
                 delay: float = 0.0):
        u = urlsplit(upstream)
        self.up_host, self.up_port, self.up_prefix = u.hostname, u.port or 80, u.path.rstrip("/")
        self.plan = plan if isinstance(plan, dict) else list(plan or [])
        kinds = set(plan) if isinstance(plan, dict) else set(self.plan)
        if bad := kinds - set(FAULT_KINDS) - {"ok"}:
            raise ValueError(f"unknown fault kinds {sorted(bad)}; choose from {FAULT_KINDS}")
        if isinstance(plan, dict) and sum(plan.values()) > 1:
            raise ValueError(f"fault probabilities add up to {sum(plan.values())} > 1")
        self.rng, self.retry_after, self.hang, self.methods = random.Random(seed), retry_after, hang, methods
        self.delay = delay
        self.injected: collections.Counter = collections.Counter()
        self.log: list[tuple[float, str]] = []
        self.requests = self.forwarded = 0
        self._lock, self._stopping = threading.Lock(), threading.Event()
        self._srv = _ProxyServer(("127.0.0.1", port), _Handler)
        self._srv.fault_proxy = self
        self.port = self._srv.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}{self.up_prefix}"
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next_kind(self, method: str) -> str:
        with self._lock:
            if method not in self.methods:
                return "ok"
            i = self.requests
            self.requests += 1
            if isinstance(self.plan, dict):
                u, kind, acc = self.rng.random(), "ok", 0.0
                for k, p in sorted(self.plan.items()):
                    acc += p
                    if u < acc:
                        kind = k
                        break
            else:
                kind = self.plan[i] if i < len(self.plan) else "ok"
            if kind != "ok":
                self.injected[kind] += 1
            self.log.append((time.time(), kind))
            return kind

    def _reply(self, h, status: int, body: bytes, headers: dict | None = None, length: int | None = None):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _forward(self, h, body: bytes) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.up_host, self.up_port, timeout=600)
        try:
            path = h.path
            headers = {k: v for k, v in h.headers.items()
                       if k.lower() not in ("host", "connection", "content-length", "accept-encoding", "keep-alive")}
            headers["Accept-Encoding"] = "identity"
            conn.request(h.command, path, body=body if h.command == "POST" else None, headers=headers)
            r = conn.getresponse()
            data = r.read()
            keep = {k: v for k, v in r.getheaders() if k.lower() in ("content-type", "retry-after", "x-request-id")}
            with self._lock:
                self.forwarded += 1
            return r.status, keep, data
        finally:
            conn.close()

    def _handle(self, h) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        kind = self._next_kind(h.command)
        err = lambda msg: json.dumps({"error": {"message": msg, "type": "injected"}}).encode()
        js = {"Content-Type": "application/json"}
        if kind == "drop":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.connection.close()                  # RST: the client sees a reset connection
            return
        if kind == "timeout":
            self._stopping.wait(self.hang)
            h.close_connection = True
            return
        if kind == "429":
            return self._reply(h, 429, err("injected rate limit"), {**js, "Retry-After": f"{self.retry_after:g}"})
        if kind == "500":
            return self._reply(h, 500, err("injected server error"), js)
        if kind == "400":
            return self._reply(h, 400, err("injected bad request"), js)
        if self.delay and h.command in self.methods:
            self._stopping.wait(self.delay)       # network / queueing latency of a remote API
        try:
            status, headers, data = self._forward(h, body)
        except OSError as e:
            return self._reply(h, 502, err(f"upstream unreachable: {e}"), js)
        if kind == "truncate":
            h.close_connection = True
            return self._reply(h, status, data[: len(data) // 2], headers, length=len(data))
        if kind == "bad_json":
            return self._reply(h, status, data[: len(data) // 2], headers)
        if kind == "empty" and status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                obj = json.loads(data)
                for ch in obj["choices"]:
                    if "message" in ch:
                        ch["message"]["content"] = None
                    else:
                        ch["text"] = ""
                data = json.dumps(obj).encode()
        return self._reply(h, status, data, headers)


class LeakyServer:
    "A loopback OpenAI look-alike whose 500/401 error bodies echo the request's `Authorization` header (for tests)."

    def __init__(self, n500: int = 1, model: str = "leaky"):
        srv = self
        self.n500, self.model, self.seen, self._lock = n500, model, [], threading.Lock()

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, obj: dict):
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                with srv._lock:
                    srv.seen.append(auth)
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": srv.model, "object": "model"}]})
                self._send(404, {"error": {"message": f"no route {self.path}; you sent Authorization: {auth}"}})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                auth = self.headers.get("Authorization", "")
                with srv._lock:
                    srv.seen.append(auth)
                    first = len(srv.seen) <= srv.n500
                if first:
                    return self._send(500, {"error": {"message": f"internal error handling Authorization: {auth}"}})
                self._send(401, {"error": {"message": f"Incorrect API key provided: {auth}", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}})

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> "LeakyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
