"""AWS failures become domain errors in one place (adapters.aws.aws_errors)."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)

from workflows.adapters.aws import aws_errors
from workflows.errors import DependencyUnavailable


@pytest.mark.parametrize(
    "failure",
    [
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=lambda failure: type(failure).__name__,
)
def test_a_request_aws_never_answered_is_a_dependency_unavailable(failure: Exception) -> None:
    with pytest.raises(DependencyUnavailable) as raised, aws_errors():
        raise failure
    assert type(failure).__name__ in raised.value.message


def test_a_malformed_request_is_a_bug_not_an_outage() -> None:
    with pytest.raises(ParamValidationError), aws_errors():
        raise ParamValidationError(report="missing TableName")
