"""FastAPI dependencies. Tests override `container` to run the app against their own clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from workflows.bootstrap import Container, get_container


def container() -> Container:
    return get_container()


ContainerDep = Annotated[Container, Depends(container)]
