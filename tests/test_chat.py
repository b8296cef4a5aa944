import io

import torch

from mygpt import GPTConfig, GPTModel, complete_text
from mygpt.chat import chat, prompts, stream_completion


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
    streamed = "".join(stream_completion(model, tokenizer, "Every effort", max_new_tokens=12))
    assert "Every effort" + streamed == complete_text(model, tokenizer, "Every effort", 12)


def test_special_token_text_is_plain_text(tokenizer, monkeypatch):
    seen = []
    import mygpt.chat as chat_module

    def fake_stream(model, idx, **kw):
        seen.append(idx.tolist()[0])
        yield torch.tensor([[50256]])  # end of text at once: nothing is shown

    monkeypatch.setattr(chat_module, "generate_stream", fake_stream)
    assert list(stream_completion(None or small_model(), tokenizer, "a<|endoftext|>b")) == []
    assert seen == [tokenizer.encode("a<|endoftext|>b", disallowed_special=())]
    assert 50256 not in seen[0]


def test_chat_transcript(tokenizer, capsys):
    model = small_model()
    chat(model, tokenizer, stdin=io.StringIO("\nEvery effort\nexit\n"), max_new_tokens=5)
    out = capsys.readouterr().out.splitlines()
    expected = complete_text(model, tokenizer, "Every effort", 5)
    assert out == [
        "MyGPT: Please enter a sentence to complete (enter 'exit' to end chat)",
        "> ",
        "> Every effort",
        f"MyGPT: {expected}",
        "> exit",
    ]
