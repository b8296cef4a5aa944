"""mygpt eval beside EleutherAI's lm-evaluation-harness 0.4.13 (its HF backend, on MyGPT's HF
export of the same model, with local-data copies of its hellaswag and lambada_openai configs):
each item's log-likelihood within 1e-4, the same greedy flags, the same accuracies.

The harness installs into its own environment with uv (bench/lm_eval_compare.py), so .ci/run
runs these after the suite with MYGPT_REQUIRE_LMEVAL=1; without it they skip.
"""

import os

import pytest
from eval_items import hellaswag_records, lambada_records, write_jsonl

if os.environ.get("MYGPT_REQUIRE_LMEVAL") != "1":
    pytest.skip(
        "lm-eval runs in .ci/run (MYGPT_REQUIRE_LMEVAL=1 uv run pytest tests/test_lm_eval.py)",
        allow_module_level=True,
    )

from lm_eval_compare import compare  # noqa: E402 (bench/, on the path from conftest)


def test_mygpt_eval_equals_lm_evaluation_harness(trained_model_file, tmp_path):
    files = {
        "hellaswag": write_jsonl(tmp_path / "hellaswag.jsonl", hellaswag_records(60)),
        "lambada": write_jsonl(tmp_path / "lambada.jsonl", lambada_records(40)),
    }
    report = compare(str(trained_model_file), files, None, batch_size=4)
    for task, n in (("hellaswag_local", 60), ("lambada_local", 40)):
        r = report[task]
        assert r["items"] == n
        assert r["max_abs_ll_diff"] < 1e-4, r
        assert r["greedy_differs"] == 0, r
        assert r["mygpt"]["acc"] == r["lm_eval"]["acc"], r
    hellaswag, lambada = report["hellaswag_local"], report["lambada_local"]
    assert hellaswag["mygpt"]["acc_norm"] == hellaswag["lm_eval"]["acc_norm"]
    assert lambada["mygpt"]["perplexity"] == pytest.approx(lambada["lm_eval"]["perplexity"], 1e-4)
    assert 0 < lambada["mygpt"]["acc"] < 1  # some last words greedy, some not: a real check
