"""The benchmark's smoke test: --quick runs every measurement on a small shape (no thresholds)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # starts scripts or TensorFlow: `pytest -m "not slow"` skips it


def test_quick_benchmark_runs_and_writes_json(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "compare_hf.py"),
            "--quick",
            "--skip-startup",
            "--json",
            str(tmp_path / "results.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    for section in ("training", "generation", "forward"):
        for impl in ("MyGPT", "transformers"):
            assert results[section][impl]["tokens_per_s"] > 0
    assert 0 < results["training"]["MyGPT"]["mfu"] < 1
    assert results["generation"]["same_tokens"] is True  # greedy: identical text, all three
    assert results["forward"]["max_logit_diff"] < 1e-4
    assert all(
        results["peak_memory"][impl]["peak_rss_bytes"] > 2**20 for impl in ("MyGPT", "transformers")
    )
    assert "| training tokens/s (2 x 64, AdamW) |" in out.stdout
    for precision in ("bfloat16", "int8"):
        assert results["generation"][f"MyGPT {precision}"]["tokens_per_s"] > 0
        assert 0 <= results["generation"]["share_of_float32_tokens"][f"MyGPT {precision}"] <= 1
    assert results["training"]["MyGPT bfloat16 autocast"]["tokens_per_s"] > 0
