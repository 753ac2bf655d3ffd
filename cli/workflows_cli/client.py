"""The service over HTTP: one method per route the commands use, errors as exceptions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from workflows_cli import __version__

# Seconds the service may hold a long poll of events (it accepts 0..25; below API Gateway's 30).
LONG_POLL_SECONDS = 20
TIMEOUT_SECONDS = 30.0


class ApiError(Exception):
    """The service answered with an error: its code, message and field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after


class Unreachable(Exception):
    """No answer from the service at `url` (refused, unknown host, timed out, ...)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


# Ids that quoting leaves as they are and a URL resolves away: never a path segment.
PATH_RESERVED = frozenset({"", ".", ".."})


def _segment(value: str) -> str:
    """One path segment: an id the user typed never adds or climbs path levels."""
    if value in PATH_RESERVED:
        raise ValueError(f"{value!r} cannot be an id in a URL's path")
    return quote(value, safe="")


def _error_of(response: httpx.Response) -> ApiError:
    retry_after = response.headers.get("Retry-After")
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        details = [d for d in error.get("details") or [] if isinstance(d, dict)]
        return ApiError(
            response.status_code, error["code"], str(error.get("message", "")), details, retry_after
        )
    text = " ".join(response.text.split())[:200]
    message = f"{response.reason_phrase or 'error'}" + (f": {text}" if text else "")
    return ApiError(response.status_code, f"http_{response.status_code}", message, None, retry_after)


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        cause = str(exc) or "connection failed"
        return f"cannot connect ({cause})"
    return str(exc) or type(exc).__name__


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            headers={
                "X-API-KEY": api_key,
                "Accept": "application/json",
                "User-Agent": f"workflows-cli/{__version__}",
            },
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = self.base_url + path
        query = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        try:
            response = self._http.request(
                method,
                url,
                params=query,
                json=json,
                headers=headers,
                timeout=timeout if timeout is not None else self._http.timeout,
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, _reason(exc)) from exc
        if not response.is_success:
            raise _error_of(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            snippet = " ".join(response.text.split())[:120]
            raise ApiError(
                response.status_code,
                "not_json",
                f"{url} answered {response.status_code} with something other than JSON: {snippet}"
                " (is the URL the API's /api/v1/workflows?)",
            ) from exc

    # ---- runs --------------------------------------------------------------------------

    def submit(
        self, definition: dict[str, Any], inputs: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body = {"definition": definition, "inputs": inputs}
        accepted: dict[str, Any] = self.request("POST", "/runs", json=body, headers=headers)
        return accepted

    def submit_saved(
        self,
        workflow_id: str,
        inputs: dict[str, Any],
        version: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        body: dict[str, Any] = {"inputs": inputs}
        if version is not None:
            body["version"] = version
        accepted: dict[str, Any] = self.request(
            "POST", f"/{_segment(workflow_id)}/runs", json=body, headers=headers
        )
        return accepted

    def runs(
        self,
        *,
        statuses: list[str] | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = {"status": statuses, "workflow_id": workflow_id, "limit": limit, "cursor": cursor}
        page: dict[str, Any] = self.request("GET", "/runs", params=params)
        return page

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.request("GET", f"/runs/{_segment(run_id)}")
        return run

    def run_definition(self, run_id: str) -> dict[str, Any]:
        definition: dict[str, Any] = self.request("GET", f"/runs/{_segment(run_id)}/definition")
        return definition

    def events(
        self,
        run_id: str,
        *,
        since: int = 0,
        limit: int | None = None,
        types: list[str] | None = None,
        wait: int | None = None,
    ) -> dict[str, Any]:
        """A page of events after `since`; with `wait`, a long poll the service may hold up to
        `wait` seconds until one exists (a service without long polling answers at once)."""
        params = {"since": since, "limit": limit, "types": ",".join(types) if types else None, "wait": wait}
        timeout = None if wait is None else wait + TIMEOUT_SECONDS
        page: dict[str, Any] = self.request(
            "GET", f"/runs/{_segment(run_id)}/events", params=params, timeout=timeout
        )
        return page

    def control(self, run_id: str, action: str, from_step: str | None = None) -> dict[str, Any]:
        body = {"from_step": from_step} if from_step is not None else None
        result: dict[str, Any] = self.request("POST", f"/runs/{_segment(run_id)}/{action}", json=body)
        return result

    def decide(
        self,
        run_id: str,
        step_id: str,
        decision: str,
        *,
        comment: str | None = None,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"fields": fields or {}}
        if comment is not None:
            body["comment"] = comment
        path = f"/runs/{_segment(run_id)}/steps/{_segment(step_id)}/{decision}"
        result: dict[str, Any] = self.request("POST", path, json=body)
        return result

    def approvals(
        self, *, assignee: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        params = {"status": "pending", "assignee": assignee, "limit": limit, "cursor": cursor}
        page: dict[str, Any] = self.request("GET", "/approvals", params=params)
        return page

    # ---- definitions -------------------------------------------------------------------

    def definitions(
        self, *, include_deleted: bool = False, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        params = {"include_deleted": "true" if include_deleted else None, "limit": limit, "cursor": cursor}
        page: dict[str, Any] = self.request("GET", "", params=params)
        return page

    def create_definition(self, definition: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.request("POST", "", json=definition)
        return created

    def add_version(self, workflow_id: str, definition: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.request("POST", f"/{_segment(workflow_id)}/versions", json=definition)
        return created

    # ---- signals -----------------------------------------------------------------------

    def signal(
        self, name: str, signal_id: str, data: dict[str, Any], run_id: str | None = None
    ) -> dict[str, Any]:
        """Send a signal to the tenant's waiting runs, or to one run."""
        path = "/signals" if run_id is None else f"/runs/{_segment(run_id)}/signals"
        sent: dict[str, Any] = self.request("POST", path, json={"name": name, "id": signal_id, "data": data})
        return sent

    # ---- webhook dead letters ----------------------------------------------------------

    def dlq_rows(
        self,
        *,
        statuses: list[str] | None = None,
        run_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = {"status": statuses, "run_id": run_id, "limit": limit, "cursor": cursor}
        page: dict[str, Any] = self.request("GET", "/webhooks/dlq", params=params)
        return page

    def replay(self, row_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/webhooks/dlq/{_segment(row_id)}/replay")
        return result
