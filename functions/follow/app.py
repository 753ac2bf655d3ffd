"""FollowFunction entry point: the WebSocket API's routes and the runs table's stream."""

from workflows.roots.startup import init_phase

with init_phase():
    from workflows.roots.follow import handle as handler

__all__ = ["handler"]
