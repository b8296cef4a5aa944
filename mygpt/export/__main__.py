"""python -m mygpt.export: the same program as `mygpt export` (mygpt/cli/export.py)."""

from mygpt.cli.common import run_main
from mygpt.cli.export import main

if __name__ == "__main__":
    run_main(main)
