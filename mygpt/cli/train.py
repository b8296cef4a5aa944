"""Train a GPT-2 124M-shape model from scratch on the-verdict.txt and print samples as it learns.

Also trains on your own text (a file or a folder of .txt files), by epochs or steps, resumes
from checkpoints, and runs on several GPUs or CPU processes under torchrun.
"""

from __future__ import annotations

import argparse

from mygpt.cli.common import HelpFormatter, add_settings, given_flags, run_main
from mygpt.io.checkpoint import Checkpoint, read_checkpoint
from mygpt.training.run_config import GROUPS, RunConfig, parts, refuse_ignored_flags
from mygpt.training.runner import eval_run, saved_config, train_run


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Every flag comes from a RunConfig field: its default, check and help live there."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    groups = {title: p.add_argument_group(title, text) for title, text in GROUPS.items()}
    for prefix, settings in parts():
        add_settings(p, settings, prefix, groups)
    return p


def parse_args(
    argv: list[str] | None = None, prog: str | None = None
) -> tuple[RunConfig, Checkpoint | None]:
    """The run's configuration: the defaults, or --resume's saved run, with the flags given
    on the command line applied over them; and --resume's checkpoint."""
    given = given_flags(build_parser(prog).parse_args(argv))
    resume = given.get("outputs.resume")
    if resume is None:
        refuse_ignored_flags(given, None)
        return RunConfig().with_flags(given), None
    checkpoint = read_checkpoint(resume, resume=True)
    saved = saved_config(checkpoint, resume)
    refuse_ignored_flags(given, saved)
    return saved.with_flags(given), checkpoint


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`mygpt train` and MyGPT_v1_local-train.py: train, or score with --eval-only."""
    config, checkpoint = parse_args(argv, prog)
    if config.eval_only:
        eval_run(config, checkpoint)
        return 0
    return train_run(config, checkpoint).exit_code


if __name__ == "__main__":
    run_main(main)
