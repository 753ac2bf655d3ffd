"""Powertools Logger, Metrics and Tracer, created once per process, and `count`.

Service name, log level and metrics namespace come from the POWERTOOLS_* environment that
template.yaml sets; tracing is disabled outside Lambda by POWERTOOLS_TRACE_DISABLED.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

logger = Logger()
metrics = Metrics()
tracer = Tracer()


def count(name: str, value: float = 1, **dimensions: str) -> None:
    """Count `value` under the metric `name`, split by `dimensions` (`action="advanced"`): a
    value that varies goes in a dimension, never in the metric's name, so one metric (and one
    alarm or dashboard widget) covers every value.

    Without dimensions the count joins the invocation's metrics, written when the handler's
    `metrics.log_metrics` flushes them. With dimensions it is written at once, as a line of its
    own (`single_metric`): a dimension added to `metrics` would apply to every metric of the
    invocation, and the records of a dispatcher batch each have their own. Either way it has
    the namespace and the `service` dimension of `metrics`.
    """
    if not dimensions:
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        return
    if is_metrics_disabled():
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=metrics.namespace) as metric:
        for key, item in dimensions.items():
            metric.add_dimension(name=key, value=item)
