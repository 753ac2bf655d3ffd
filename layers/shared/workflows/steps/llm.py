"""LLM clients for the `prompt` step: OpenAI-compatible chat completions and Bedrock Converse.

Every failure becomes a `StepFailed` with a stable code, so the step's retry policy decides
what happens next: rate limits, timeouts, 5xx and unreachable endpoints are retryable; bad
credentials, invalid requests and responses that do not follow the protocol are not, because
sending the same request again cannot fix them.

Clients are created on first use, never at import or construction time; the Bedrock client comes
from a factory the composition root gives (roots/parts.py), since steps never build AWS clients.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import httpx
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from workflows.deadline import DeadlineTransport, call_deadline
from workflows.domain.failures import StepFailed
from workflows.settings import Settings

Provider = Literal["openai", "bedrock"]

MAX_RESPONSE_BYTES = 8 * 1024 * 1024
SECRET_CACHE_SECONDS = 300
_SNIPPET_CHARS = 200

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value built by `factory` on first use, once, even with concurrent callers."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
        return self._value


@dataclass(frozen=True)
class ChatRequest:
    model: str
    prompt: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # The step's time budget (its timeout_seconds bounded by the Lambda's remaining time).
    timeout: float | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None

    @property
    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


class LlmClient(Protocol):
    """What the prompt step needs from a provider."""

    def complete(self, request: ChatRequest) -> Completion: ...


# --- shared helpers --------------------------------------------------------------------------


def read_bounded(
    response: httpx.Response, *, deadline: float, prefix: str, limit: int = MAX_RESPONSE_BYTES
) -> bytes:
    """The body of a streamed response, refusing oversized bodies and slow drips past the deadline.

    httpx's read timeout applies per chunk, so a server sending one byte at a time could hold
    the step far longer than the configured timeout without an overall deadline. The default
    client's transport keeps `workflows.deadline`'s deadline on every read (it also covers the
    status line and headers); this check is the same deadline for any other client.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise StepFailed(
                f"{prefix}_bad_response", f"response body exceeds {limit} bytes", retryable=False
            )
        if time.monotonic() > deadline:
            raise StepFailed(f"{prefix}_timeout", "response took longer than the configured timeout")
        chunks.append(chunk)
    return b"".join(chunks)


def http_status_failure(status: int, body: bytes, *, prefix: str, what: str) -> StepFailed:
    """The StepFailed for a non-2xx answer from an HTTP dependency."""
    snippet = body[:_SNIPPET_CHARS].decode("utf-8", errors="replace")
    message = f"{what} answered HTTP {status}: {snippet}".rstrip(": ")
    if status == 408:
        return StepFailed(f"{prefix}_timeout", message)
    if status == 429:
        return StepFailed(f"{prefix}_rate_limited", message)
    if status >= 500:
        return StepFailed(f"{prefix}_http_5xx", message)
    if status in (401, 403):
        return StepFailed(f"{prefix}_auth", message, retryable=False)
    if 400 <= status < 500:
        return StepFailed(f"{prefix}_http_4xx", message, retryable=False)
    # Redirects are never followed: a moved endpoint is a configuration problem.
    return StepFailed(f"{prefix}_bad_response", f"{message} (redirects are not followed)", retryable=False)


def transport_failure(exc: httpx.HTTPError, *, prefix: str, what: str) -> StepFailed:
    if isinstance(exc, httpx.TimeoutException):
        return StepFailed(f"{prefix}_timeout", f"{what} timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return StepFailed(f"{prefix}_not_configured", f"{what} URL is invalid: {exc}", retryable=False)
    return StepFailed(f"{prefix}_unavailable", f"{what} is unreachable: {type(exc).__name__}: {exc}")


_THROTTLED = frozenset({"ThrottlingException", "ServiceQuotaExceededException", "TooManyRequestsException"})
_AUTH = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
    }
)
_INVALID = frozenset({"ValidationException", "ResourceNotFoundException", "ConflictException"})
_TIMEOUT = frozenset({"ModelTimeoutException"})


def bedrock_failure(exc: ClientError | BotoCoreError, *, prefix: str, what: str) -> StepFailed:
    """The one place where Bedrock errors become step failures (shared by LLM and retrieval)."""
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return StepFailed(f"{prefix}_timeout", f"{what} timed out")
    if isinstance(exc, BotoCoreError):
        return StepFailed(f"{prefix}_unavailable", f"{what} is unreachable: {exc}")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "")) or "unknown"
    message = f"{what} refused the request ({code}): {error.get('Message', '')}".rstrip(": ")
    if code in _THROTTLED:
        return StepFailed(f"{prefix}_rate_limited", message)
    if code in _AUTH:
        return StepFailed(f"{prefix}_auth", message, retryable=False)
    if code in _INVALID:
        return StepFailed(f"{prefix}_invalid_request", message, retryable=False)
    if code in _TIMEOUT:
        return StepFailed(f"{prefix}_timeout", message)
    # InternalServerException, ServiceUnavailableException, ModelNotReadyException, ...
    return StepFailed(f"{prefix}_unavailable", message)


def _non_negative_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


# --- OpenAI-compatible chat completions -------------------------------------------------------


class OpenAIChatClient:
    """POST {base_url}/chat/completions with a bearer key (OpenAI, vLLM, Ollama, LiteLLM, ...)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: Callable[[], str | None],
        timeout: float,
        http_client: Callable[[], httpx.Client],
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._http = Lazy(http_client)

    def complete(self, request: ChatRequest) -> Completion:
        if not self._base_url:
            raise StepFailed(
                "llm_not_configured",
                "no LLM endpoint is configured (set WORKFLOWS_LLM_BASE_URL)",
                retryable=False,
            )
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        payload: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.max_tokens is not None:
            payload["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            payload["temperature"] = request.temperature
        headers = {"Accept": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"

        timeout = min(self._timeout, request.timeout) if request.timeout else self._timeout
        what = "LLM endpoint"
        try:
            with (
                call_deadline(timeout) as deadline,
                self._http.get().stream(
                    "POST",
                    f"{self._base_url}/chat/completions",
                    json=payload,
                    headers=headers,
                    timeout=timeout,
                ) as response,
            ):
                body = read_bounded(response, deadline=deadline, prefix="llm")
                status = response.status_code
        except httpx.HTTPError as exc:
            raise transport_failure(exc, prefix="llm", what=what) from exc
        if not 200 <= status < 300:
            raise http_status_failure(status, body, prefix="llm", what=what)
        return self._parse(body, request.model)

    @staticmethod
    def _parse(body: bytes, requested_model: str) -> Completion:
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            content = choice["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StepFailed(
                "llm_bad_response", "LLM response is not a chat completion", retryable=False
            ) from exc
        if content is not None and not isinstance(content, str):
            raise StepFailed("llm_bad_response", "LLM message content is not text", retryable=False)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        model = data.get("model")
        finish = choice.get("finish_reason")
        return Completion(
            text=content or "",
            model=model if isinstance(model, str) and model else requested_model,
            input_tokens=_non_negative_int(usage.get("prompt_tokens")),
            output_tokens=_non_negative_int(usage.get("completion_tokens")),
            finish_reason=finish if isinstance(finish, str) else None,
        )


# --- Amazon Bedrock Converse ------------------------------------------------------------------


class BedrockConverseClient:
    """Bedrock `converse` on a `bedrock-runtime` client built on first use."""

    def __init__(self, client: Callable[[], Any]) -> None:
        self._client = Lazy(client)

    def complete(self, request: ChatRequest) -> Completion:
        kwargs: dict[str, Any] = {
            "modelId": request.model,
            "messages": [{"role": "user", "content": [{"text": request.prompt}]}],
        }
        if request.system:
            kwargs["system"] = [{"text": request.system}]
        inference: dict[str, Any] = {}
        if request.max_tokens is not None:
            inference["maxTokens"] = request.max_tokens
        if request.temperature is not None:
            inference["temperature"] = request.temperature
        if inference:
            kwargs["inferenceConfig"] = inference
        try:
            response = self._client.get().converse(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise bedrock_failure(exc, prefix="llm", what="Bedrock") from exc
        try:
            blocks = response["output"]["message"]["content"]
            text = "".join(block["text"] for block in blocks if "text" in block)
        except (KeyError, TypeError) as exc:
            raise StepFailed("llm_bad_response", "Bedrock response has no message", retryable=False) from exc
        usage = response.get("usage") or {}
        return Completion(
            text=text,
            model=request.model,
            input_tokens=_non_negative_int(usage.get("inputTokens")),
            output_tokens=_non_negative_int(usage.get("outputTokens")),
            finish_reason=response.get("stopReason"),
        )


# --- defaults built from settings --------------------------------------------------------------


def default_http_client() -> httpx.Client:
    # Timeouts are passed per request; the transport also keeps each request's overall deadline
    # (connect to last body byte, workflows.deadline). Redirects are refused rather than followed.
    return httpx.Client(
        transport=DeadlineTransport(), follow_redirects=False, headers={"User-Agent": "workflows/1.0"}
    )


def llm_api_key(settings: Settings) -> Callable[[], str | None]:
    """The LLM key: from settings, else from Secrets Manager (cached by Powertools)."""

    def resolve() -> str | None:
        if settings.llm_api_key is not None:
            return settings.llm_api_key.get_secret_value()
        if settings.llm_api_key_secret_arn:
            from aws_lambda_powertools.utilities import parameters

            value = parameters.get_secret(settings.llm_api_key_secret_arn, max_age=SECRET_CACHE_SECONDS)
            if isinstance(value, bytes):
                value = value.decode()
            return str(value).strip() or None
        return None

    return resolve
