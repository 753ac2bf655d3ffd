"""The functions' metrics on this machine: kept out of the terminal unless DEVSTACK_METRICS=on.

Deployed, the functions' Powertools metrics are JSON lines (CloudWatch's Embedded Metric
Format) in their logs, which CloudWatch turns into metrics. `make run` and `python -m bench`
run the same functions in one terminal, where those lines would only bury the banner, the
activity lines and the figures, so both turn them off unless DEVSTACK_METRICS=on.

POWERTOOLS_METRICS_DISABLED alone does not keep them out: Powertools (3.x) skips the line when
it flushes a disabled set, but keeps the values, and `add_metric` writes the whole set,
disabled or not, as soon as one metric holds 100 values (EMF's limit per line). So while
metrics are disabled, a value is dropped as it is added.
"""

from __future__ import annotations

import functools
import os
from collections.abc import MutableMapping
from typing import Any

SWITCH = "DEVSTACK_METRICS"


def wanted(environ: MutableMapping[str, str] = os.environ) -> bool:
    """DEVSTACK_METRICS says on (on, 1, true or yes); off by default."""
    return environ.get(SWITCH, "off").lower() in {"on", "1", "true", "yes"}


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
    """Sets POWERTOOLS_METRICS_DISABLED (before Powertools reads it): from DEVSTACK_METRICS when
    it is set, else true unless already set; and makes a disabled set keep nothing."""
    if SWITCH in environ:
        environ["POWERTOOLS_METRICS_DISABLED"] = "false" if wanted(environ) else "true"
    else:
        environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    _drop_values_while_disabled()


def _drop_values_while_disabled() -> None:
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider,
    )

    add_metric = AmazonCloudWatchEMFProvider.add_metric
    if getattr(add_metric, "drops_while_disabled", False):
        return

    @functools.wraps(add_metric)
    def add_unless_disabled(self: AmazonCloudWatchEMFProvider, *args: Any, **kwargs: Any) -> None:
        if not is_metrics_disabled():
            add_metric(self, *args, **kwargs)

    add_unless_disabled.drops_while_disabled = True  # type: ignore[attr-defined]
    AmazonCloudWatchEMFProvider.add_metric = add_unless_disabled  # type: ignore[method-assign]
