"""The README and the guides cannot rot: every command they show parses with the program's
own flags, and the README's short examples run as written."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from mygpt.cli import chat, export, generate, serve, train
from mygpt.cli import eval as eval_command

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = {  # how a command line names a program -> its parser
    "MyGPT_v1_local-train.py": lambda args: train.build_parser().parse_args(args),
    "MyGPT_v2_pretrained.py": chat.parse_args,
    "train": lambda args: train.build_parser().parse_args(args),
    "chat": chat.parse_args,
    "generate": generate.parse_args,
    "serve": serve.parse_args,
    "eval": eval_command.parse_args,
    "export": export.parse_args,
    "mygpt.export": export.parse_args,
}


def blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def commands(path: Path) -> list[list[str]]:
    """Each MyGPT program's arguments on the shell lines of `path`'s bash blocks."""
    found = []
    for block in blocks(path, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\|(?!\|)|&&", line):
                words = shlex.split(part, comments=True)
                if "uv" not in words[:1]:
                    continue
                at = next((i for i, w in enumerate(words) if w in PROGRAMS), None)
                if at is not None and (
                    words[at].endswith(".py") or words[at - 1] in ("mygpt", "-m")
                ):
                    found.append(words[at:])
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_command_shown_parses(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    shown = commands(path)
    for program, *args in shown:
        try:
            PROGRAMS[program](args)
        except SystemExit as e:
            pytest.fail(f"{path.name}: {program} {shlex.join(args)}: exit {e.code}")
    if path.name in ("README.md", "training.md", "finetuning.md", "export.md"):
        assert shown, f"{path.name} shows no command"


def test_the_guides_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for guide in DOCS[1:]:
        assert f"(docs/{guide.name})" in readme, guide.name
    assert len(readme.splitlines()) <= 260


@pytest.mark.slow
def test_the_readmes_mygpt_commands_and_python_run_as_written(tmp_path):
    readme = ROOT / "README.md"
    shell = next(b for b in blocks(readme, "bash") if "uv run mygpt train" in b)
    python = next(b for b in blocks(readme, "python") if "train_run" in b)
    env_bin = str(Path(sys.executable).parent)
    script = shell.replace("uv run mygpt", f"{env_bin}/mygpt")
    done = subprocess.run(["bash", "-ec", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs/tiny/model.safetensors").is_file()
    assert (tmp_path / "runs/tiny.gguf").is_file()
    (result,) = (tmp_path / "runs/out.jsonl").read_text().splitlines()
    assert '"prompt": "Every effort moves you"' in result and '"finish_reason"' in result
    assert "MyGPT: Every effort moves you" in done.stdout
    done = subprocess.run(
        [sys.executable, "-c", python], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "Ep 1 (Step 000000)" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("Every effort moves you")
