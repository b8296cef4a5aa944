import importlib
import io
import re

import pytest
import torch

from mygpt import GPTConfig, GPTModel, Sampling, complete_text, stream_text
from mygpt.inference.chat import ChatSettings, apply_setting, chat, prompts
from mygpt.tokenizer import ENDOFTEXT_ID


def test_prompts_skip_blanks_and_stop_at_exit_words():
    lines = ["\n", "  hello \n", "\t\n", "world\n", "  ExIt \n", "after\n"]
    assert list(prompts(lines)) == ["hello", "world"]
    assert list(prompts(["a\n", "QUIT\n", "b\n"])) == ["a"]
    assert list(prompts(["a\n"])) == ["a"]


def small_model():
    torch.manual_seed(0)
    return GPTModel(GPTConfig(context_length=16, emb_dim=32, n_heads=2, n_layers=1)).eval()


def test_stream_equals_greedy_completion(tokenizer):
    model = small_model()
    streamed = "".join(stream_text(model, tokenizer, "Every effort", Sampling(max_new_tokens=12)))
    assert "Every effort" + streamed == complete_text(model, tokenizer, "Every effort", 12)


def test_special_token_text_is_plain_text(tokenizer, monkeypatch):
    seen = []
    generate_module = importlib.import_module(
        "mygpt.inference.generate"
    )  # `mygpt.inference.generate` is a function

    def fake_stream(model, idx, **kw):
        seen.append(idx.tolist()[0])
        yield torch.tensor([[ENDOFTEXT_ID]])  # end of text at once: nothing is shown

    monkeypatch.setattr(generate_module, "generate_stream", fake_stream)
    eos = Sampling(eos_id=ENDOFTEXT_ID)
    assert list(stream_text(small_model(), tokenizer, "a<|endoftext|>b", eos)) == []
    assert complete_text(small_model(), tokenizer, "a<|endoftext|>b", sampling=eos) == (
        "a<|endoftext|>b"
    )
    # One rule in the chat and in complete_text: the prompt is plain text.
    assert seen == [tokenizer.encode("a<|endoftext|>b", disallowed_special=())] * 2
    assert 50256 not in seen[0]


def test_chat_transcript(tokenizer, capsys):
    model = small_model()
    chat(
        model,
        tokenizer,
        ChatSettings(Sampling(max_new_tokens=5)),
        stdin=io.StringIO("\nEvery effort\nexit\n"),
    )
    out = capsys.readouterr().out.splitlines()
    expected = complete_text(model, tokenizer, "Every effort", 5)
    assert out == [
        "MyGPT: Please enter a sentence to complete (enter 'exit' to end chat)",
        "> ",
        "> Every effort",
        f"MyGPT: {expected}",
        "> exit",
    ]


def test_set_show_and_commands_in_a_piped_chat(tokenizer, capsys):
    model = small_model()
    lines = [
        "/show",
        "/set temperature abc",
        "/set top_k 0",
        "/set max_new_tokens 0",
        "/set colour blue",
        "/set temperature",
        "/frobnicate",
        "/set max_new_tokens 4",
        "/set repetition_penalty 1.5",
        "/set top_k none",
        "/set verbose on",
        "//etc",
        "/exit",
        "never read",
    ]
    settings = ChatSettings(Sampling(max_new_tokens=9, top_k=40, temperature=0.0), seed=3)
    chat(model, tokenizer, settings, stdin=io.StringIO("\n".join(lines) + "\n"))
    out = capsys.readouterr().out.splitlines()
    answers = [line for line in out if not line.startswith("> ")]
    expected = complete_text(model, tokenizer, "/etc", 4, repetition_penalty=1.5)
    assert answers[1:] == [
        "  temperature: 0.0",
        "  top_k: 40",
        "  top_p: none",
        "  max_new_tokens: 9",
        "  repetition_penalty: 1.0",
        "  seed: 3",
        "  verbose: off",
        "  stop: none",
        "  template: none",
        "error: temperature: not a valid value: 'abc'",
        "error: top_k must be at least 1, got 0",
        "error: max_new_tokens must be at least 1, got 0",
        "error: unknown setting 'colour'; settings: temperature, top_k, top_p, max_new_tokens, "
        "repetition_penalty, seed, verbose, template",
        "error: usage: /set NAME VALUE (see /help)",
        "error: unknown command /frobnicate (see /help; '//' completes text starting with '/')",
        "  max_new_tokens = 4",
        "  repetition_penalty = 1.5",
        "  top_k = none",
        "  verbose = on",
        f"MyGPT: {expected}",  # "//etc" completes the literal "/etc"
        answers[-1],
    ]
    assert re.fullmatch(r"\[4 tokens, \d+\.\d\d s, \d+\.\d tokens/s\]", answers[-1])  # no escapes
    assert "never read" not in "\n".join(out)


def test_apply_setting():
    s = ChatSettings(Sampling())
    assert apply_setting(s, "top_p", "0.9").sampling.top_p == 0.9
    assert apply_setting(s, "seed", "42").seed == 42
    assert apply_setting(apply_setting(s, "seed", "42"), "seed", "none").seed is None
    assert apply_setting(s, "verbose", "off").verbose is False
    for name, value in [("top_p", "2"), ("verbose", "maybe"), ("temperature", "-1")]:
        with pytest.raises(ValueError):
            apply_setting(s, name, value)
