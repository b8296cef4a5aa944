"""The flags of generation that chat, generate and serve share: sampling, seed, template and
the weights' precision, with v2's defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mygpt.data.instruct import RESPONSE_END, TEMPLATES
from mygpt.errors import UserError
from mygpt.inference.generate import CHAT_SAMPLING, Sampling
from mygpt.inference.precision import PRECISIONS
from mygpt.settings import require_seed, setting

GENERATION = "generation"  # the group of these flags


@dataclass(frozen=True)
class GenerationOptions:
    """How completions are sampled, and the weights' precision."""

    max_new_tokens: int = setting(
        CHAT_SAMPLING.max_new_tokens, "completion length", group=GENERATION, positive=True
    )
    temperature: float = setting(CHAT_SAMPLING.temperature, "0 is greedy", group=GENERATION)
    top_k: int | None = setting(
        CHAT_SAMPLING.top_k, "sample among the N likeliest tokens", group=GENERATION, positive=True
    )
    top_p: float | None = setting(
        CHAT_SAMPLING.top_p,
        "nucleus sampling: among the fewest tokens whose probability reaches X",
        group=GENERATION,
    )
    repetition_penalty: float = setting(
        CHAT_SAMPLING.repetition_penalty,
        "transformers' rule: a seen token's logit is divided by X if positive, multiplied "
        "if negative; 1 is off",
        group=GENERATION,
    )
    stop: tuple[str, ...] = setting(
        (),
        "end a completion where its text contains TEXT (repeatable)",
        group=GENERATION,
        metavar="TEXT",
        repeat=True,
    )
    seed: int | None = setting(
        None, "same seed, same completions (default: random)", group=GENERATION
    )
    template: str | None = setting(
        None,
        "alpaca: each prompt is the instruction of the book's Alpaca prompt, and only the "
        "response is shown; none: complete the text (default: what the model's file "
        "records, else none)",
        group=GENERATION,
        choices=TEMPLATES,
    )
    precision: str = setting(
        "float32",
        "weights for generation: bfloat16, int8 (Linear layers and the head), or auto "
        "(the fastest here: timed at first use, cached per machine and model shape); "
        "float32 is exact",
        group=GENERATION,
        choices=PRECISIONS,
    )

    def __post_init__(self) -> None:
        require_seed(self)
        self.sampling(CHAT_SAMPLING.eos_id)  # Sampling's own checks, in the flags' words

    def sampling(self, eos_id: int) -> Sampling:
        """The sampling these flags give; a completion ends at `eos_id`, the model's
        tokenizer's <|endoftext|>."""
        names = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop")
        try:
            values = {name: getattr(self, name) for name in names}
            return replace(CHAT_SAMPLING, **values, eos_id=eos_id)
        except ValueError as e:
            raise UserError("--" + str(e).replace("_", "-")) from None


def alpaca_sampling(sampling: Sampling) -> Sampling:
    """`sampling` that also ends a response at the next "###", as at <|endoftext|>."""
    return replace(sampling, stop=(*sampling.stop, RESPONSE_END))
