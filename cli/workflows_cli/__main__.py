"""`python -m workflows_cli` is the `workflows` command."""

import sys

from workflows_cli.main import main

sys.exit(main())
