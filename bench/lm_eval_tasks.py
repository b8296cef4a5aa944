"""Task configs for lm-evaluation-harness that read local files: its own hellaswag and
lambada_openai definitions (the same preprocessing, prompts and metrics), with
`dataset_path: json` instead of the hub."""

from __future__ import annotations

from pathlib import Path

HELLASWAG = """\
task: hellaswag_local
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
process_docs: !function utils.process_docs
doc_to_text: "{{{{query}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "choices"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

LAMBADA = """\
task: lambada_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""

# The harness's own HellaSwag clean-up, imported rather than copied.
UTILS = "from lm_eval.tasks.hellaswag.utils import process_docs  # noqa: F401\n"


def write_tasks(folder: Path, hellaswag: Path | None, lambada: Path | None) -> list[str]:
    """The YAMLs (and utils.py) in `folder`; the names of the tasks written."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "utils.py").write_text(UTILS)
    names = []
    for name, template, data in (
        ("hellaswag_local", HELLASWAG, hellaswag),
        ("lambada_local", LAMBADA, lambada),
    ):
        if data is not None:
            (folder / f"{name}.yaml").write_text(template.format(data=Path(data).resolve()))
            names.append(name)
    return names
