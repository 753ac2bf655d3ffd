"""The init phase of a Lambda function: its entry module imports its root inside `init_phase()`.

Importing boto3, pydantic, Powertools (and, for the API, FastAPI and the routes' models) makes
hundreds of thousands of long-lived objects; the cyclic garbage collector would walk all of them
again and again while they are made (about 60 ms of the API's import). Collection is therefore
off while the root is imported, and what the import made is then frozen (`gc.freeze`): it lives
as long as the process, so later collections, in every request, never walk it again. The few
cycles the import leaves behind are kept, which costs far less memory than the time it saves.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def init_phase() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
