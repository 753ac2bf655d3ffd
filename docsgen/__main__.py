"""`python -m docsgen [--check]` (`make docs`): rewrite the step reference in docs/steps.md."""

from __future__ import annotations

from docsgen.reference import main

if __name__ == "__main__":
    raise SystemExit(main())
