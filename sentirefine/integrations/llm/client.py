"""The Gemini client: google-genai's async API behind the limiter, with retries and a daily quota.

* The key comes only from ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``; it is passed to the SDK
  (which sends it as a header) and never logged, stored or put into an exception message.
* ``llm.base_url`` becomes the SDK's ``http_options.base_url`` (how the tests point it at a
  loopback stub, and how a proxy can be used).
* The SDK's own retries stay off; tenacity retries 429/5xx/timeouts with exponential back-off,
  or exactly the server's ``retry-after`` when it sends one. A 429 also pauses the limiter so
  the other in-flight workers back off too. A *daily* quota 429 is not retried: it clears only
  at midnight Pacific.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from dataclasses import dataclass

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from sentirefine.config import LLMConfig
from sentirefine.errors import SentirefineError
from sentirefine.integrations.llm.cache import AnswerCache
from sentirefine.integrations.llm.ratelimit import RateLimiter, RequestTooLarge
from sentirefine.logs import log_event

log = logging.getLogger(__name__)

KEY_VARIABLES = {"gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "openai": ("OPENAI_API_KEY",)}


class LLMError(SentirefineError):
    """A request to the LLM failed after its retries (the loop records it and goes on)."""



class DailyQuotaExhausted(LLMError):
    """No requests left today (llm.rpd, or the server's per-day quota)."""


def api_key(backend: str = "gemini") -> str | None:
    """The backend's API key from the environment, or None."""
    for name in KEY_VARIABLES[backend]:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


@dataclass
class Reply:
    text: str
    tokens_in: int
    tokens_out: int


@dataclass
class Counters:
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    retries: int = 0
    failed_requests: int = 0


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, DailyQuotaExhausted):
        return False
    code = _status(exc)
    if code is not None:
        return code == 429 or code >= 500 or code == 408
    return isinstance(exc, _transport_errors())


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level failures of whichever HTTP library the SDK picked (httpx, or aiohttp if installed)."""
    errors: tuple[type[BaseException], ...] = (asyncio.TimeoutError, TimeoutError, ConnectionError)
    with contextlib.suppress(ImportError):
        import httpx

        errors += (httpx.TransportError,)
    with contextlib.suppress(ImportError):
        import aiohttp

        errors += (aiohttp.ClientError,)
    return errors


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    raw = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


class LLMClient:
    """``await client.generate(system, data, schema, tokens)`` → :class:`Reply`, within every limit.

    The limits, retries, daily quota and counters live here; a backend only says how one request
    is made (:meth:`_call`) — Gemini through google-genai, or any OpenAI-compatible endpoint.
    """

    def __init__(self, cfg: LLMConfig, key: str, cache: AnswerCache, limiter: RateLimiter | None = None) -> None:
        self.cfg, self.cache, self._key = cfg, cache, key
        self.limiter = limiter or RateLimiter(cfg.rpm, cfg.tpm, window_s=cfg.window_s, margin=cfg.window_margin,
                                              allowance_s=cfg.arrival_allowance_s)
        self.counters = Counters()
        self._day_used = cache.requests_today()

    def scrub(self, text: str) -> str:
        """Defence in depth: no message we log or raise may contain the key."""
        return text.replace(self._key, "***") if self._key else text

    async def _call(self, system: str, data: str, schema: type) -> tuple[str, int | None, int]:
        """One HTTP request: (answer text, input tokens if reported, output tokens)."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the backend's HTTP sessions."""

    async def generate(self, system: str, data: str, schema: type, tokens: int) -> Reply:
        """One request (retried as needed) of the system prompt and the data part, JSON out."""
        retrying = AsyncRetrying(retry=retry_if_exception(_retryable),
                                 stop=stop_after_attempt(self.cfg.max_retries + 1), wait=self._wait,
                                 reraise=True, before_sleep=self._before_sleep)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(system, data, schema, tokens)
        except (LLMError, RequestTooLarge):
            raise
        except Exception as exc:
            self.counters.failed_requests += 1
            code = _status(exc)
            raise LLMError(self.scrub(f"LLM request failed ({type(exc).__name__}"
                                      f"{f' {code}' if code else ''}): {str(exc)[:300]}"),
                           hint="check llm.base_url, the key and the quota; the rows stay queued") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, system: str, data: str, schema: type, tokens: int) -> Reply:
        if self._day_used >= self.cfg.rpd:
            raise DailyQuotaExhausted(f"llm.rpd={self.cfg.rpd} requests already sent in the last 24 h",
                                      hint="the queue is kept; the next run continues")
        slot = await self.limiter.acquire(tokens)
        self._day_used += 1
        self.cache.record_request()
        self.counters.requests += 1
        try:
            text, tokens_in, tokens_out = await self._call(system, data, schema)
        except Exception as exc:
            self.limiter.settle(slot, None)
            message = str(getattr(exc, "message", "") or "")
            if _status(exc) == 429 and "day" in message.lower():
                raise DailyQuotaExhausted(self.scrub(f"server daily quota exhausted: {message[:200]}"),
                                          hint="it resets at midnight Pacific; the queue is kept") from None
            if _status(exc) == 429:
                self.limiter.pause(_retry_after(exc) or self.cfg.backoff_s)
            raise
        self.limiter.settle(slot, tokens_in)
        self.counters.tokens_in += slot.tokens
        self.counters.tokens_out += tokens_out
        return Reply(text, slot.tokens, tokens_out)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = _retry_after(exc) if exc else None
        if after is not None:
            return min(after, self.cfg.backoff_max_s)
        delay = self.cfg.backoff_s * 2 ** (state.attempt_number - 1)
        return min(self.cfg.backoff_max_s, delay * (1 + 0.25 * random.random()))

    def _before_sleep(self, state: RetryCallState) -> None:
        self.counters.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log_event(log, "llm_retry", level=logging.WARNING, attempt=state.attempt_number,
                  status=_status(exc) if exc else None, error=self.scrub(type(exc).__name__ if exc else ""),
                  wait_s=round(state.upcoming_sleep, 3))



class GeminiClient(LLMClient):
    """Gemini through google-genai's async client (``llm.base_url`` → ``http_options.base_url``)."""

    def __init__(self, cfg: LLMConfig, key: str, cache: AnswerCache, limiter: RateLimiter | None = None) -> None:
        from google import genai
        from google.genai import types

        super().__init__(cfg, key, cache, limiter)
        self.types = types
        http = types.HttpOptions(base_url=cfg.base_url, api_version=cfg.api_version,
                                 timeout=int(cfg.timeout_s * 1000))
        self._sdk = genai.Client(api_key=key, http_options=http)

    async def _call(self, system: str, data: str, schema: type) -> tuple[str, int | None, int]:
        config = self.types.GenerateContentConfig(
            system_instruction=system, response_mime_type="application/json", response_schema=schema,
            temperature=0.0, max_output_tokens=self.cfg.max_output_tokens,
            thinking_config=self.types.ThinkingConfig(thinking_budget=0),
        )
        response = await self._sdk.aio.models.generate_content(model=self.cfg.model, contents=[data], config=config)
        usage = response.usage_metadata
        tokens_in = getattr(usage, "prompt_token_count", None) if usage else None
        tokens_out = (getattr(usage, "candidates_token_count", None) or 0) if usage else 0
        return response.text or "", tokens_in, tokens_out

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):  # closing must never mask the run's result
            await self._sdk.aio.aclose()
