"""SweeperFunction entry point: re-kicks the runs the service lost track of, or fails them."""

from workflows.roots.startup import init_phase

with init_phase():
    from workflows.roots.sweeper import handle as handler

__all__ = ["handler"]
