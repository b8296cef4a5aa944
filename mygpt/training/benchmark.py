"""A benchmark scored while training (--eval-task), as build-nanogpt tracks HellaSwag."""

from __future__ import annotations

import tiktoken

from mygpt.errors import UserError
from mygpt.evaluation import tasks
from mygpt.evaluation.datasets import read_jsonl, task_file
from mygpt.inference.precision import for_inference
from mygpt.model import GPTModel
from mygpt.training.run_config import RunConfig

NAMES = {"hellaswag": "HellaSwag"}  # as the progress lines and the plot name it


class TrainingBenchmark:
    """The task's items, read (or downloaded) once before training, and how to score them."""

    def __init__(self, config: RunConfig, tokenizer: tiktoken.Encoding):
        report = config.report
        if report.eval_task_every % config.train.eval_freq:
            raise UserError(
                f"--eval-task-every {report.eval_task_every} must be a multiple of --eval-freq "
                f"{config.train.eval_freq}: the task is scored at loss evaluations"
            )
        self.task, self.every, self.tokenizer = report.eval_task, report.eval_task_every, tokenizer
        self.path = report.eval_task_data or task_file(self.task)
        self.records = read_jsonl(self.path)[: report.eval_task_limit]

    def describe(self) -> str:
        return f"{self.name}: {len(self.records)} items of {self.path}, every {self.every} steps"

    @property
    def name(self) -> str:
        return NAMES[self.task]

    def due(self, step: int) -> bool:
        """Whether 0-based step `step`'s evaluation scores the task."""
        return step % self.every == 0

    def score(self, model: GPTModel) -> float:
        """acc_norm of the model as it is now (an inference copy in float32 scores it)."""
        fast = for_inference(model, "float32")
        return tasks.hellaswag(fast, self.tokenizer, self.records, nanogpt=False)["acc_norm"]
