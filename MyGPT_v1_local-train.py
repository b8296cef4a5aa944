"""Train a GPT-2 124M-shape model from scratch on the-verdict.txt and print samples as it learns.

The seed's first script, kept as it was: the same flags, output and exit codes as `mygpt train`
(mygpt/cli/train.py), where the program lives.
"""

from mygpt.cli.common import run_main
from mygpt.cli.train import main

if __name__ == "__main__":
    run_main(main)
