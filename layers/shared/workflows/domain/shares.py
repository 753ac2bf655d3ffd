"""Fair shares of the dispatcher between tenants (docs/architecture.md, "Fair shares").

Two bounds, both per tenant and both enforced across every dispatcher instance through one item
each in the quotas table:

- **Step rate** (`tenant_steps_per_sec`, `tenant_steps_burst`): the generic cell rate algorithm,
  GCRA. A tenant's item holds its *theoretical arrival time* (TAT): when its budget would be back
  to full. Admitting work of `cost` steps moves it to `max(TAT, now) + cost / rate`; work
  reserved at `start` (the TAT before it) may run once `start - (burst - 1) / rate` is not in
  the future, so `burst` steps may start at once. A kick reserves every step it may run (the
  current step and the inline steps after it) and gives back what it did not run. A kick over
  its tenant's rate is not refused: it *reserves* the moment it may start and is sent again,
  delayed to that moment, so it is read once more and never spins.
- **Calls in flight** (`tenant_calls_in_flight`, and `calls_in_flight` across all tenants): a
  step that calls out (`inline = False`: webhook, prompt, rag_search) holds a permit while it
  runs. The permits are leases (holder -> expiry), so a process that dies holding one loses it
  when the lease ends.
"""

from __future__ import annotations

from dataclasses import dataclass

# The pool of permits shared by every tenant (a tenant id never holds '*').
ALL_TENANTS = "*"


@dataclass(frozen=True)
class StepRate:
    """A tenant's step budget: `per_second` sustained, `burst` at once."""

    per_second: float
    burst: float

    @property
    def interval(self) -> float:
        """Seconds of budget one step costs."""
        return 1.0 / self.per_second

    def delay(self, start: float, now: float) -> float:
        """Seconds until work reserved at `start` (the TAT before it) may run; 0 = now."""
        return max(0.0, start - (self.burst - 1) * self.interval - now)


__all__ = ["ALL_TENANTS", "StepRate"]
