"""python -m orchestrator.run STUDY.yaml ...: `provpt run` where only Python is on the path
(what `ray job submit -- python -m orchestrator.run` runs on a cluster's head node)."""

import sys

from orchestrator.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
