"""python -m orchestrator COMMAND ...: the `provpt` command."""

import sys

from orchestrator.cli import main

sys.exit(main())
