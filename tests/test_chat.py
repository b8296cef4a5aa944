import importlib
import io

import torch

from mygpt import GPTConfig, GPTModel, Sampling, complete_text, stream_text
from mygpt.chat import chat, prompts
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
    generate_module = importlib.import_module("mygpt.generate")  # `mygpt.generate` is a function

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
    chat(model, tokenizer, Sampling(max_new_tokens=5), stdin=io.StringIO("\nEvery effort\nexit\n"))
    out = capsys.readouterr().out.splitlines()
    expected = complete_text(model, tokenizer, "Every effort", 5)
    assert out == [
        "MyGPT: Please enter a sentence to complete (enter 'exit' to end chat)",
        "> ",
        "> Every effort",
        f"MyGPT: {expected}",
        "> exit",
    ]
