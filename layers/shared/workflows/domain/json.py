"""JSON documents as the service passes them around: inputs, outputs, payloads, configs.

Their shape is the user's; the service only requires that they are JSON (checked at the edge,
domain.jsonlimits). The aliases name that in signatures.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JsonValue: TypeAlias = Any
JsonObject: TypeAlias = dict[str, Any]
