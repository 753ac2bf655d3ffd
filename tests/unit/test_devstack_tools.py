"""The local stack's command-line edges: the port check `make run` does before it starts,
`python -m devstack.keys` when AWS cannot be reached or no region is known, and the functions'
metric lines, kept out of the terminal unless asked for."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from devstack import keys, metrics
from devstack.__main__ import _busy_port


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something listens on, bound as the stack's servers bind (with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_port_something_listens_on_is_named_with_its_setting(listener: int) -> None:
    message = _busy_port("127.0.0.1", listener, "MOTO_PORT")

    assert message is not None
    assert f"127.0.0.1:{listener} is busy" in message
    assert "set MOTO_PORT to another port" in message


def test_a_port_nobody_listens_on_is_free(closed_port: int) -> None:
    assert _busy_port("127.0.0.1", closed_port, "PORT") is None


@pytest.fixture
def no_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AWS settings from this machine (no profile files, credentials or region); the
    environment as it was afterwards, whatever the tool set in it."""
    saved = dict(os.environ)
    for name in [name for name in os.environ if name.startswith("AWS_")] + ["WORKFLOWS_API_KEYS_TABLE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.usefixtures("no_aws_settings")
def test_keys_says_in_one_line_that_nothing_answers_at_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)

    code = keys.main(["list", "--tenant", "acme"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith(
        f"devstack.keys: nothing answers at AWS_ENDPOINT_URL={endpoint} (Connection refused)"
    )


@pytest.mark.usefixtures("no_aws_settings")
def test_keys_says_in_one_line_that_no_region_is_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    # Should a region be found after all, the requests still go nowhere but this machine.
    for service in ("CLOUDFORMATION", "DYNAMODB"):
        monkeypatch.setenv(f"AWS_ENDPOINT_URL_{service}", f"http://127.0.0.1:{closed_port}")

    code = keys.main(["list", "--tenant", "acme"])

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("devstack.keys: no AWS region: set AWS_DEFAULT_REGION")


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
def test_disabled_metrics_print_nothing_however_many_values_pile_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DEVSTACK_METRICS", raising=False)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics.configure()
    emf = Metrics(namespace="DevstackTest")

    for _ in range(150):  # past EMF's 100 values a line, where Powertools writes a set anyway
        emf.add_metric(name="PiledUp", unit=MetricUnit.Count, value=1)
        emf.flush_metrics()

    assert "PiledUp" not in capsys.readouterr().out


def test_metrics_asked_for_are_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DEVSTACK_METRICS", "on")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics.configure()
    emf = Metrics(namespace="DevstackTest")

    emf.add_metric(name="Shown", unit=MetricUnit.Count, value=1)
    emf.flush_metrics()

    assert '"Name":"Shown"' in capsys.readouterr().out
