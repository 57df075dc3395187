"""Teacher and judge model client: one chat turn (OpenAI chat or Anthropic Messages)."""

from __future__ import annotations

from typing import Any, Unpack

from agents.models.base import (
    ClientOptions,
    _finish_reason,
    _int_field,
    _Malformed,
    _ModelClient,
    _seed,
    _str_field,
    _Usage,
)
from streams.models import ChatResult, Endpoint


class TeacherClient(_ModelClient):
    """Chats with the teacher or judge model (OpenAI chat or Anthropic Messages)."""

    def __init__(
        self, endpoint: Endpoint, *, kind: str = "teacher", **options: Unpack[ClientOptions]
    ) -> None:
        options.setdefault("max_in_flight", 16)
        super().__init__(endpoint, kind=kind, **options)

    async def chat(
        self, system: str, user: str, *,
        temperature: float = 0.0, max_tokens: int = 2048, seed: int | None = 0,
    ) -> ChatResult:
        """One system + user turn; returns the assistant's text.

        ``seed`` is sent to OpenAI-compatible servers only (Anthropic has no such field),
        and not at all when None.
        """
        if self.endpoint.api == "anthropic":
            path = "/v1/messages"
            body: dict[str, Any] = {
                "model": self.endpoint.model,
                "max_tokens": max_tokens,
                "system": system,
                "messages": [{"role": "user", "content": user}],
                "temperature": temperature,
            }
            parse = _parse_anthropic
        else:
            path = "/v1/chat/completions"
            body = {
                "model": self.endpoint.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "temperature": temperature,
                "max_tokens": max_tokens,
                **_seed(seed),
            }
            parse = _parse_openai_chat
        out = await self._call(path, body, parse)
        text, finish = out.value
        return ChatResult(
            text=text,
            latency_ms=out.latency_ms,
            retries=out.attempts - 1,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=out.completion_tokens,
            finish_reason=finish,
        )



def _parse_openai_chat(body: Any) -> tuple[tuple[str, str], _Usage]:
    choice = body["choices"][0]
    message = choice["message"]
    usage = body.get("usage")
    return (
        (_str_field(message, "content"), _finish_reason(choice)),
        _Usage(_int_field(usage, "prompt_tokens"), _int_field(usage, "completion_tokens")),
    )


# Anthropic's stop_reason, in the OpenAI vocabulary the rest of the pipeline reads.
_ANTHROPIC_FINISH = {"max_tokens": "length", "end_turn": "stop", "stop_sequence": "stop"}


def _parse_anthropic(body: Any) -> tuple[tuple[str, str], _Usage]:
    blocks = body["content"]
    if not isinstance(blocks, list):
        raise _Malformed("content is not a list")
    # Concatenate text blocks; other block types (thinking, tool use) are not the answer.
    texts = [
        _str_field(b, "text") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    ]
    if not texts:
        raise _Malformed("no text block in content")
    usage = body.get("usage")
    stop_reason = body.get("stop_reason")
    finish = _ANTHROPIC_FINISH.get(stop_reason, "unknown") if isinstance(stop_reason, str) else (
        "unknown")
    return (
        ("".join(texts), finish),
        _Usage(_int_field(usage, "input_tokens"), _int_field(usage, "output_tokens")),
    )
