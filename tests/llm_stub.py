"""A loopback stand-in for Gemini's REST ``generateContent`` endpoint (the network edge only),
also answering OpenAI-style ``/v1/chat/completions`` for the second backend.

It enforces its own rpm/tpm over a sliding window (429 + Retry-After beyond them, counted as
``violations``), answers in the requested JSON shape with labels from a keyword rule (so tests
can predict them), and can be told to misbehave: ``garbage``, ``partial``, ``unknown_ids``,
``bad_labels``, ``duplicates``, ``error500``, ``error429``, ``slow``. Every request is recorded
with its arrival time, token count, items and status.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

POSITIVE = ("좋", "재밌", "재미있", "최고", "감동", "추천", "명작", "사랑", "웃기", "great", "good")
_PATH = re.compile(r"^/(v1|v1beta)/models/([^/:]+):generateContent$")
_CHAT_PATH = "/v1/chat/completions"  # the OpenAI-compatible backend, base_url = <stub>/v1


def keyword_label(text: str) -> int:
    """The stub's 'model': positive iff a positive keyword occurs."""
    return int(any(word in text for word in POSITIVE))


def count_tokens(body: dict[str, Any]) -> int:
    """The stub's token count: one per 4 UTF-8 bytes of every text part (clients estimate higher)."""
    texts = [m.get("content") or "" for m in body.get("messages", [])]
    texts += [p.get("text", "") for c in body.get("contents", []) for p in c.get("parts", [])]
    texts += [p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", [])]
    return math.ceil(sum(len(t.encode("utf-8")) for t in texts) / 4)


class GeminiStub:
    """``with GeminiStub(rpm=20, tpm=5000, window_s=1.0) as stub: ... stub.url``"""

    def __init__(self, *, rpm: int = 1000, tpm: int = 10_000_000, window_s: float = 60.0) -> None:
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self.mode = "ok"
        self.script: deque[str] = deque()  # modes for the next requests, then ``mode``
        self.delay_s = 0.0
        self.confidence = 0.9
        self.requests: list[dict[str, Any]] = []
        self.violations = 0
        self._window: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GeminiStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def ok_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["status"] == 200]

    # -- rate limits ----------------------------------------------------------------------------
    def _admit(self, now: float, tokens: int) -> float | None:
        """None if the request fits the window, else seconds until it would."""
        with self._lock:
            # threads admit in any order: filter rather than pop from the left
            self._window = deque(e for e in self._window if e[0] + self.window_s > now)
            used = sum(t for _, t in self._window)
            if len(self._window) < self.rpm and used + tokens <= self.tpm:
                self._window.append((now, tokens))
                return None
            self.violations += 1
            return max(0.01, min(t for t, _ in self._window) + self.window_s - now)

    # -- answers --------------------------------------------------------------------------------
    def _next_mode(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else self.mode

    def answer(self, body: dict[str, Any], mode: str) -> str:
        if "messages" in body:  # OpenAI-compatible chat completions
            items = json.loads(body["messages"][-1]["content"])
            schema = json.dumps(body.get("response_format", {}))
        else:
            items = json.loads(body["contents"][-1]["parts"][-1]["text"])
            config = body.get("generationConfig", {})
            schema = json.dumps(config.get("responseSchema") or config.get("responseJsonSchema") or {})
        if "summary" in schema:
            return json.dumps({"items": [{"id": it["id"], "verdict": "right", "comment": "stub"} for it in items],
                              "summary": "stub critique summary"}, ensure_ascii=False)
        out = [{"id": it["id"], "label": keyword_label(it["text"]), "confidence": self.confidence,
                "reason": "keyword rule"} for it in items]
        if mode == "garbage":
            return '{"items": [{"id": 1, "label": '
        if mode == "partial":
            out = out[: len(out) // 2]
        elif mode == "unknown_ids":
            out = [{**o, "id": o["id"] + 1000} for o in out]
        elif mode == "bad_labels":
            out = [{**o, "label": [2, -1, "1", True, None][i % 5]} for i, o in enumerate(out)]
        elif mode == "duplicates":
            out = out + [{**o, "label": 1 - o["label"]} for o in out]
        return json.dumps({"items": out}, ensure_ascii=False)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                now = time.monotonic()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                match = _PATH.match(self.path.split("?")[0])
                chat = self.path.split("?")[0] == _CHAT_PATH
                key = self.headers.get("x-goog-api-key") or self.headers.get("Authorization", "").removeprefix(
                    "Bearer ")
                record = {"t": now, "path": self.path, "tokens": count_tokens(body), "key": key or None, "body": body}
                stub.requests.append(record)
                if not match and not chat:
                    record["status"] = 404
                    return self._send(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
                wait = stub._admit(now, record["tokens"])
                if wait is not None:
                    record["status"] = 429
                    return self._send(429, {"error": {"code": 429, "message": "Resource exhausted (per minute)",
                                                      "status": "RESOURCE_EXHAUSTED"}},
                                      {"Retry-After": f"{wait:.3f}"})
                mode = stub._next_mode()
                record["mode"] = mode
                if mode in ("error500", "error429"):
                    code = 500 if mode == "error500" else 429
                    record["status"] = code
                    return self._send(code, {"error": {"code": code, "message": "injected", "status": "INTERNAL"}},
                                      {"Retry-After": "0.05"} if code == 429 else None)
                if mode == "slow" or stub.delay_s:
                    time.sleep(stub.delay_s or 0.3)
                text = stub.answer(body, mode)
                record["status"] = 200
                if chat:
                    return self._send(200, {
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": record["tokens"], "completion_tokens": len(text) // 4},
                    })
                self._send(200, {
                    "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": record["tokens"],
                                      "candidatesTokenCount": len(text) // 4,
                                      "totalTokenCount": record["tokens"] + len(text) // 4},
                    "modelVersion": match.group(2),
                })

        return Handler
