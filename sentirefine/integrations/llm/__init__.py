"""Gemini relabelling: versioned prompts, a rate limiter, an answer cache and the async client.

Only :mod:`sentirefine.integrations.llm.relabel` is used by the loop; it imports the SDK lazily, so a run
without an API key never pays for importing ``google-genai``.
"""
