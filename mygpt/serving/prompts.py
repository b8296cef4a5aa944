"""Chat messages as the text a model completes: the book's Alpaca prompt for an
instruction-tuned model, a plain transcript for a base GPT-2."""

from __future__ import annotations

from mygpt.data.instruct import RESPONSE_END, alpaca_prompt

USER, ASSISTANT = "User:", "Assistant:"


def chat_prompt(messages: list[tuple[str, str]], template: str) -> tuple[str, tuple[str, ...]]:
    """The text to complete for (role, content) messages, and the stop strings that end the
    assistant's turn.

    alpaca: the last user message is the instruction (the Alpaca format has one turn; a
    system message, if any, is its input). none: a transcript, a system message first,
    then "User: ..." and "Assistant: ..." lines, ending with "Assistant:".
    """
    if template == "alpaca":
        instruction = next((c for r, c in reversed(messages) if r == "user"), "")
        system = "\n".join(c for r, c in messages if r in ("system", "developer"))
        return alpaca_prompt({"instruction": instruction, "input": system}), (RESPONSE_END,)
    lines = []
    for role, content in messages:
        if role in ("system", "developer"):
            lines.append(content)
        else:
            lines.append(f"{USER if role == 'user' else ASSISTANT} {content}")
    return "\n".join(lines) + f"\n{ASSISTANT}", (f"\n{USER}",)
