"""The scripts' --help is their flag reference: every default that exists, none that does not."""

from conftest import ROOT, run_in_process


def help_text(script: str, monkeypatch, capsys) -> str:
    """What `python SCRIPT --help` prints, one space between words."""
    out = run_in_process(ROOT / script, ["--help"], monkeypatch, capsys)
    assert out.returncode == 0
    # argparse wraps to the terminal's width; join the lines to match phrases across breaks.
    return " ".join(out.stdout.split())


def test_v1_help_names_each_default_once(monkeypatch, capsys):
    text = help_text("MyGPT_v1_local-train.py", monkeypatch, capsys)
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "--lr X AdamW peak learning rate (default: 0.0004; 5e-05 with --init-from)" in text
    assert "--epochs N passes over the data (default: 10)" in text
    assert "--save-every N checkpoint every N steps and at the end (default: 0)" in text
    assert "--stride N step between windows (default: the context length)" in text
    assert "--resume PATH" in text and "--start-context TEXT" in text


def test_v2_help_names_each_default_once(monkeypatch, capsys):
    text = help_text("MyGPT_v2_pretrained.py", monkeypatch, capsys)
    assert "(default: None)" not in text and "(default: [])" not in text
    assert "--temperature X 0 is greedy (default: 0.7)" in text
    assert "--top-k N sample among the N likeliest tokens (default: 40)" in text
    assert "--stop TEXT end a completion where its text contains TEXT (repeatable) " in text
