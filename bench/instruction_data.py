"""An instruction set made offline from Python's own docstrings, in the book's Alpaca format.

Each documented function, class and method of some standard-library modules gives one record:
an instruction about it ("What does the Python function `json.dumps` do?", in one of a few
phrasings, some with the name as `input`) and the first sentence of its docstring as `output`.
Shuffled with a seed, then split: the first 90% to OUT-train.json, the last 10% to
OUT-test.json (held out: score it with --eval-only).

    uv run python bench/instruction_data.py /tmp/demo/instructions
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
import sys
from pathlib import Path

MODULES = (
    "builtins",
    "os",
    "os.path",
    "re",
    "json",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "string",
    "math",
    "random",
    "statistics",
    "datetime",
    "time",
    "shutil",
    "subprocess",
    "threading",
    "logging",
    "argparse",
    "csv",
    "textwrap",
    "heapq",
    "bisect",
    "copy",
    "operator",
    "inspect",
    "urllib.parse",
    "base64",
    "hashlib",
    "struct",
    "zipfile",
    "tarfile",
    "tempfile",
    "glob",
    "fnmatch",
    "io",
    "decimal",
    "fractions",
    "enum",
    "dataclasses",
    "contextlib",
    "abc",
    "sqlite3",
)
PHRASINGS = (
    ("What does the Python {kind} `{name}` do?", False),
    ("Explain in one sentence what `{name}` is for.", False),
    ("Describe the purpose of the {kind} `{name}` from Python's standard library.", False),
    ("Summarize what this Python {kind} does.", True),
)


def first_sentence(doc: str) -> str | None:
    """The docstring's first sentence, or None when it has none worth learning."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    if "(" in paragraph.split(" ")[0] or len(paragraph) < 20:  # a signature line, or too short
        return None
    sentence = re.split(r"(?<=[.!?])\s", paragraph, maxsplit=1)[0]
    return sentence if 20 <= len(sentence) <= 300 else None


def documented(module_name: str):
    module = importlib.import_module(module_name)
    prefix = "" if module_name == "builtins" else module_name + "."
    for attr in sorted(dir(module)):
        obj = getattr(module, attr, None)
        if attr.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", module_name) not in (module_name, None, "posix"):
            continue  # imported from elsewhere: documented there
        yield prefix + attr, "class" if inspect.isclass(obj) else "function", obj
        if inspect.isclass(obj):
            for method in sorted(vars(obj)):
                value = getattr(obj, method, None)
                if not method.startswith("_") and inspect.isroutine(value):
                    yield f"{prefix}{attr}.{method}", "method", value


def records(seed: int = 0) -> list[dict]:
    rng, out, seen = random.Random(seed), [], set()
    for module_name in MODULES:
        for name, kind, obj in documented(module_name):
            answer = first_sentence(inspect.getdoc(obj) or "")
            if answer is None or name in seen:
                continue
            seen.add(name)
            phrasing, with_input = rng.choice(PHRASINGS)
            instruction = phrasing.format(kind=kind, name=name)
            out.append(
                {
                    "instruction": instruction,
                    "input": f"`{name}`" if with_input else "",
                    "output": answer,
                }
            )
    rng.shuffle(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip())
    data, prefix = records(), sys.argv[1]
    cut = int(0.9 * len(data))
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}-train.json").write_text(json.dumps(data[:cut], indent=1))
    Path(f"{prefix}-test.json").write_text(json.dumps(data[cut:], indent=1))
    print(
        f"{len(data)} records: {cut} in {prefix}-train.json, {len(data) - cut} in "
        f"{prefix}-test.json"
    )
