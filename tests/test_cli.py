"""The scripts' --help is their flag reference: every default that exists, none that does not."""

import pytest
from conftest import ROOT, run_in_process


@pytest.mark.parametrize(
    ("script", "phrases"),
    [
        (
            "MyGPT_v1_local-train.py",
            [
                "--lr X AdamW peak learning rate (default: 0.0004; 5e-05 with --init-from; 0.0002 "
                "with --lora-rank)",
                "--lora-alpha X the update is scaled by alpha / rank "
                "(default: the rank, so a scale",
                "--lora-targets NAMES comma-separated Linear layers of every block to adapt: "
                "query,",
                "--base-dtype {float32,bfloat16} storage of the frozen weights: "
                "bfloat16 halves them",
                "--epochs N passes over the data (default: 10)",
                "--save-every N checkpoint every N steps and at the end (default: 0)",
                "--stride N step between windows (default: the context length)",
                "--resume PATH continue from this checkpoint.pt",
                "--start-context TEXT sample prompt (default: Every effort moves you)",
            ],
        ),
        (
            "MyGPT_v2_pretrained.py",
            [
                "--temperature X 0 is greedy (default: 0.7)",
                "--top-k N sample among the N likeliest tokens (default: 40)",
                "--stop TEXT end a completion where its text contains TEXT (repeatable) ",
                "--seed N same seed, same completions (default: random)",
            ],
        ),
        (
            "mygpt.export",
            [
                "--outtype {f32,f16,bf16,q8_0} GGUF weights (default: f16)",
                "--force replace OUT if it exists",
                "--source {openai,hf} openai: OpenAI's TensorFlow checkpoint",
            ],
        ),
    ],
)
def test_help_names_each_default_once(script, phrases, monkeypatch, capsys):
    target = script if script.startswith("mygpt.") else ROOT / script
    out = run_in_process(target, ["--help"], monkeypatch, capsys)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # argparse wraps to the terminal: match across breaks
    for nothing in ("None", "False", "[]"):
        assert f"(default: {nothing})" not in text
    for phrase in phrases:
        assert phrase in text
