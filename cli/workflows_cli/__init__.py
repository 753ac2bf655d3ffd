"""`workflows`: the command-line client of the workflow-run service (an HTTP client only)."""

__version__ = "1.0.0"
