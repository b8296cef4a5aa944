"""Generate completions for a file of prompts, many at once (offline batch generation)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from mygpt.cli.common import (
    HelpFormatter,
    add_model_flags,
    add_settings,
    model_from_flags,
    run_main,
    settings_from,
)
from mygpt.errors import UserError
from mygpt.inference.engine import Engine
from mygpt.inference.offline import Job, generate_file, lines_done, read_prompts, requests
from mygpt.inference.options import GenerationOptions
from mygpt.inference.precision import for_inference
from mygpt.settings import as_paths, require_positive, setting

FILES = "files and batching"


@dataclass(frozen=True)
class GenerateSettings:
    """Where the prompts come from and go, and how many run at once."""

    input: Path = setting(
        None,
        'JSON Lines: {"prompt": "..."} or an Alpaca record (instruction, input, output) a line',
        group=FILES,
    )
    output: Path = setting(
        None,
        "JSON Lines, one line per prompt in input order; an existing file is continued",
        group=FILES,
    )
    max_batch: int = setting(16, "sequences generated at once", group=FILES, positive=True)

    def __post_init__(self) -> None:
        as_paths(self, "input", "output")
        for name in ("input", "output"):
            if getattr(self, name) is None:
                raise UserError(f"--{name} is required")
        require_positive(self, "max_batch")


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=HelpFormatter)
    add_settings(p, GenerateSettings)
    add_settings(p, GenerationOptions)
    add_model_flags(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    """`mygpt generate MODEL --input prompts.jsonl --output out.jsonl`."""
    args = parse_args(argv, prog)
    files = settings_from(GenerateSettings, args)
    options = settings_from(GenerationOptions, args)
    records = read_prompts(files.input)  # every line checked before any model is loaded
    done = lines_done(files.output, len(records))
    if done == len(records):
        print(f"{files.output} already holds all {done} results")
        return
    model = model_from_flags(args)
    tokenizer = model.tokenizer
    sampling = options.sampling(tokenizer.eot_token)
    job = Job(sampling, options.seed, options.template or model.template)
    fast = for_inference(model, options.precision, log=print)
    del model  # the inference copy is all that generates
    engine = Engine(fast, tokenizer, files.max_batch)
    work = requests(records, job, tokenizer, engine)[done:]
    if done:
        print(f"Continuing {files.output} after its {done} lines")

    def progress(total: int) -> tqdm:
        return tqdm(total=total, unit="seq", file=sys.stderr, dynamic_ncols=True)

    written = sum(1 for _ in generate_file(engine, work, files.output, progress))
    print(f"Wrote {written} results to {files.output} ({done + written} lines)")


if __name__ == "__main__":
    run_main(main)
