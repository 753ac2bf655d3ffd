"""FastAPI dependencies. Tests override `container` to run the app against their own clients."""

from __future__ import annotations

from workflows.bootstrap import Container, get_container


def container() -> Container:
    return get_container()
