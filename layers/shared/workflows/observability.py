"""Powertools Logger, Metrics and Tracer, created once per process.

Service name, log level and metrics namespace come from the POWERTOOLS_* environment that
template.yaml sets; tracing is disabled outside Lambda by POWERTOOLS_TRACE_DISABLED.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer()
