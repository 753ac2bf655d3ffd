"""What one webhook delivery attempt came to; the caller decides what happens next."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# delivered: done; transient: worth retrying later (timeouts, network errors, 408/425/429/5xx);
# permanent: not (refused by the egress policy, other 4xx, an invalid request).
DeliveryOutcome = Literal["delivered", "transient", "permanent"]


@dataclass(frozen=True)
class DeliveryResult:
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    # A machine-readable reason where the outcome alone does not say enough
    # (`secret_host_not_allowed`: a hop the request's secrets may not go to).
    code: str | None = None
