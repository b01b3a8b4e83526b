"""Second backend: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp's
server, Ollama, LiteLLM, ...), for users without Gemini access.

Only the request differs: the same limiter, retries, daily quota, cache, batching and item
validation apply (see :class:`~sentirefine.integrations.llm.client.LLMClient`). The key comes from
``OPENAI_API_KEY`` and travels as a bearer header; the answer is constrained with
``response_format: json_schema`` (servers that ignore it still have every item validated).
"""

from __future__ import annotations

import json
from typing import Any

from sentirefine.config import LLMConfig
from sentirefine.integrations.llm.cache import AnswerCache
from sentirefine.integrations.llm.client import LLMClient
from sentirefine.integrations.llm.ratelimit import RateLimiter

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class HTTPStatusError(Exception):
    """A non-200 answer; ``code`` and ``response`` (its headers: retry-after) drive the retries."""

    def __init__(self, code: int, message: str, response: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.response = code, message, response


class OpenAICompatClient(LLMClient):
    def __init__(self, cfg: LLMConfig, key: str, cache: AnswerCache, limiter: RateLimiter | None = None) -> None:
        super().__init__(cfg, key, cache, limiter)
        self._url = (cfg.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        self._session: Any = None  # an aiohttp session belongs to the running event loop: made on first use

    async def _call(self, system: str, data: str, schema: type) -> tuple[str, int | None, int]:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self._key}"},
                                                  timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s))
        body = {
            "model": self.cfg.model, "temperature": 0, "max_tokens": self.cfg.max_output_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": data}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}},
        }
        async with self._session.post(self._url, json=body) as response:
            raw = await response.text()
            if response.status != 200:
                raise HTTPStatusError(response.status, raw[:300], response)
        payload = json.loads(raw)
        usage = payload.get("usage") or {}
        text = payload["choices"][0]["message"].get("content") or ""
        return text, usage.get("prompt_tokens"), usage.get("completion_tokens") or 0

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
