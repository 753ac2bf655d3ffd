"""Where a run keeps its steps' outputs (docs/storage.md, "Step outputs").

The run item is rewritten by every commit, so it holds only what stays small whatever the run
does: an output whose JSON is at most INLINE_OUTPUT_BYTES is kept inline; a bigger one is
written once, before the commit that records it, to an item of its own, and the run and the
step's events hold a reference to it. The run item remembers the latest output of the most
recently finished steps, at most KEPT_STEP_OUTPUTS of them and at most KEPT_OUTPUT_BYTES of JSON
together (always the latest one), so the item stays under 1 KB however long the run; an older
step's output is found in the run's events when a template asks for it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import Any, TypeGuard

from workflows.domain.run import RunEvent

INLINE_OUTPUT_BYTES = 256
KEPT_STEP_OUTPUTS = 32
# The run item's remembered outputs together, as JSON (before the item compresses them): room
# for the latest (an inline output is at most INLINE_OUTPUT_BYTES) and the item's other fields
# within 1 KB, so a commit writes 1 KB however long the run, plus its events (bench cost.scaling:
# 100-byte outputs 2.6 WRU a step at 10 steps and 2.0 at 500; 3.3 and 4.9 when 32 were kept).
KEPT_OUTPUT_BYTES = 256
# Past this many bytes (compressed) an output goes to S3 rather than to a DynamoDB item: a PUT
# costs less than the write units, and S3 stores it for less.
S3_OUTPUT_BYTES = 32 * 1024
REF = "$output"


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def is_ref(value: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REF), dict)


def ref(output_id: str, body: bytes, *, s3: bool = False) -> dict[str, Any]:
    """The reference stored in place of an output kept in its own item: short, since the run
    item holds up to KEPT_STEP_OUTPUTS of them (the item's own key makes the id unique). An
    output in S3 also names its SHA-256, checked when it is read back."""
    if s3:
        return {
            REF: {"id": output_id, "bytes": len(body), "s3": True, "sha256": hashlib.sha256(body).hexdigest()}
        }
    return {REF: {"id": output_id, "bytes": len(body)}}


def in_s3(value: dict[str, Any]) -> bool:
    return bool(value[REF].get("s3"))


def new_output_id() -> str:
    return secrets.token_hex(8)


def ref_id(value: dict[str, Any]) -> str:
    output_id: str = value[REF]["id"]
    return output_id


# The events that record a step's output: its completion, or a failure routed on.
_OUTPUT_EVENTS = frozenset({"step_completed", "step_failed", "step_timeout"})


def latest_output(events: Sequence[RunEvent], step_id: str) -> tuple[bool, object]:
    """The last output `events` record for the step: (found, output, maybe a reference)."""
    for event in reversed(events):
        if event.step_id == step_id and "output" in event.payload and event.event_type in _OUTPUT_EVENTS:
            return True, event.payload["output"]
    return False, None


def remember(step_outputs: dict[str, Any], step_id: str, stored: Any) -> tuple[dict[str, Any], bool]:
    """`step_outputs` with `step_id`'s latest output last, the oldest dropped beyond the limits
    (KEPT_STEP_OUTPUTS, KEPT_OUTPUT_BYTES), the latest always kept; and whether any was dropped."""
    kept = {sid: value for sid, value in step_outputs.items() if sid != step_id}
    kept[step_id] = stored
    sizes = {sid: len(encode({sid: value})) for sid, value in kept.items()}
    total = sum(sizes.values())
    dropped = False
    while len(kept) > 1 and (len(kept) > KEPT_STEP_OUTPUTS or total > KEPT_OUTPUT_BYTES):
        oldest = next(iter(kept))
        total -= sizes[oldest]
        del kept[oldest]
        dropped = True
    return kept, dropped


def forgot_some(dropped: bool, remembered: int) -> bool:
    """Whether a run may have outputs its run item no longer remembers: it dropped some (the
    run item says so), or it keeps as many as the count allows (a run stored before the run
    item said so dropped its oldest past KEPT_STEP_OUTPUTS)."""
    return dropped or remembered >= KEPT_STEP_OUTPUTS
