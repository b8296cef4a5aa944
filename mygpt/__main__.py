"""python -m mygpt: the `mygpt` command."""

from mygpt.cli.main import run

if __name__ == "__main__":
    run()
