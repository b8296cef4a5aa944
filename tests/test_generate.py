import pytest
import torch

from mygpt import (
    GPTConfig,
    GPTModel,
    Sampling,
    complete_text,
    for_inference,
    generate,
    load_gpt2,
    penalize_repetition,
    sample_next_token,
    stream_text,
    text_to_token_ids,
)

# A small vocabulary keeps these many forward passes cheap; generation does not care about size.
SMALL = GPTConfig(vocab_size=101, context_length=32, emb_dim=32, n_heads=4, n_layers=2)


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return GPTModel(SMALL).eval()


def prompt(batch=1, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, SMALL.vocab_size, (batch, length), generator=g)


def greedy_reference(model, idx, max_new_tokens, context_size):
    """The book's generate_text_simple: argmax over a cropped window, one token at a time."""
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1]
        idx = torch.cat((idx, logits.argmax(-1, keepdim=True)), dim=1)
    return idx


def test_greedy_is_deterministic_and_equals_top_k_1(tiny_model):
    idx = prompt()
    a = generate(tiny_model, idx, 10)
    assert a.shape == (1, 15) and torch.equal(a[:, :5], idx)
    assert torch.equal(a, generate(tiny_model, idx, 10))
    g = torch.Generator().manual_seed(0)
    assert torch.equal(a, generate(tiny_model, idx, 10, temperature=1.5, top_k=1, generator=g))
    assert torch.equal(a, greedy_reference(tiny_model, idx, 10, SMALL.context_length))


@pytest.mark.parametrize("context_size", [None, 8])
def test_cache_equals_no_cache_past_the_context(tiny_model, context_size):
    """40 new tokens after a 20-token prompt run well past the 32-token context (and past 8)."""
    idx = prompt(batch=3, length=20)
    cached = generate(tiny_model, idx, 40, context_size=context_size)
    uncached = generate(tiny_model, idx, 40, context_size=context_size, use_cache=False)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, greedy_reference(tiny_model, idx, 40, context_size or 32))


def test_prompt_longer_than_context_is_cropped(tiny_model):
    long = prompt(length=50)
    out = generate(tiny_model, long, 3)
    assert out.shape == (1, 53)
    assert torch.equal(out[:, 50:], generate(tiny_model, long[:, -32:], 3)[:, 32:])


def test_batch_equals_rows(tiny_model):
    idx = prompt(batch=4, length=6)
    batch = generate(tiny_model, idx, 12)
    for row in range(4):
        assert torch.equal(batch[row : row + 1], generate(tiny_model, idx[row : row + 1], 12))


def test_eos_stops_generation(tiny_model):
    idx = prompt()
    free = generate(tiny_model, idx, 10)
    eos = free[0, 8].item()  # the 4th generated token
    out = generate(tiny_model, idx, 10, eos_id=eos)
    first = (free[0, 5:] == eos).nonzero()[0].item()  # eos may already appear earlier
    assert torch.equal(out, free[:, : 5 + first + 1])


def test_eos_pads_finished_rows_until_all_are_done(tiny_model):
    idx = prompt(batch=2, length=4, seed=3)
    free = generate(tiny_model, idx, 10)
    eos = free[0, 6].item()
    out = generate(tiny_model, idx, 10, eos_id=eos)
    row0_end = (free[0, 4:] == eos).nonzero()[0].item() + 4
    assert torch.equal(out[0, : row0_end + 1], free[0, : row0_end + 1])
    assert (out[0, row0_end:] == eos).all()
    if (free[1, 4:] == eos).any():
        assert out.shape[1] <= free.shape[1]
    else:  # row 1 never ends, so generation runs to max_new_tokens
        assert torch.equal(out[1], free[1])


def test_sampling_is_seeded_and_respects_top_k(tiny_model):
    idx = prompt()
    seeded = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    runs = [
        generate(tiny_model, idx, 20, temperature=1.0, top_k=5, generator=seeded(s))
        for s in (7, 7, 8)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen = lambda **kw: {  # noqa: E731
        sample_next_token(
            logits, Sampling(temperature=1.0, **kw), torch.Generator().manual_seed(s)
        ).item()
        for s in range(200)
    }
    assert seen(top_k=2) == {0, 1}
    assert seen(top_p=0.79) == {0, 1}  # 0.5 + 0.3 reaches 0.79: the 0.15 token is cut
    assert seen(top_p=0.81) == {0, 1, 2}
    assert seen(top_p=0.1) == {0}  # the most likely token always stays
    assert seen() == {0, 1, 2, 3}


def test_generation_restores_training_mode():
    model = GPTModel(GPTConfig(context_length=8, emb_dim=16, n_heads=2, n_layers=1)).train()
    generate(model, torch.zeros(1, 2, dtype=torch.long), 2)
    assert model.training


def test_sampling_checks_its_values():
    for bad in (
        dict(temperature=-1.0),
        dict(temperature=float("nan")),
        dict(top_k=0),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(repetition_penalty=0.0),
        dict(max_new_tokens=-1),
        dict(stop=("",)),
    ):
        with pytest.raises(ValueError):
            Sampling(**bad)
    s = Sampling(top_k=5)
    assert s.with_(top_k=None, temperature=0.5) == Sampling(top_k=5, temperature=0.5)


def test_book_keyword_call_and_sampling_object_agree(tiny_model):
    idx = prompt()
    seeded = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    book = generate(
        tiny_model,
        idx,
        max_new_tokens=15,
        context_size=32,
        top_k=25,
        temperature=1.4,
        generator=seeded(),
    )
    s = Sampling(max_new_tokens=15, top_k=25, temperature=1.4)
    assert torch.equal(book, generate(tiny_model, idx, sampling=s, generator=seeded()))
    with pytest.raises(TypeError, match="unknown sampling option"):
        generate(tiny_model, idx, 3, top_q=0.5)
    with pytest.raises(ValueError, match="stop strings are text"):
        generate(tiny_model, idx, 3, stop=("x",))


def test_repetition_penalty_formula():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[0, 1, 1]])  # token 1 twice: penalised once, as in transformers
    out = penalize_repetition(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]
    assert penalize_repetition(logits, seen, 1.0) is logits


@pytest.mark.slow
def test_repetition_penalty_equals_transformers_greedy(tmp_path):
    """Same weights in both; greedy with a penalty gives transformers' tokens, one for one."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=101,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=100,
        pad_token_id=100,
    )
    reference = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # biases and norms are zero/one at init: make them matter
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    reference.save_pretrained(tmp_path)
    ours = load_gpt2(tmp_path)
    idx = prompt(length=6)
    for penalty in (1.0, 1.3, 0.8):
        theirs = reference.generate(
            idx,
            max_new_tokens=40,
            do_sample=False,
            repetition_penalty=penalty,
            attention_mask=torch.ones_like(idx),
            eos_token_id=None,
        )
        mine = generate(ours, idx, 40, repetition_penalty=penalty)
        assert mine.tolist() == theirs.tolist(), penalty
        fast = generate(for_inference(ours), idx, 40, repetition_penalty=penalty)
        assert fast.tolist() == theirs.tolist(), penalty
    plain = generate(ours, idx, 40)
    penalised = generate(ours, idx, 40, repetition_penalty=1.3)
    assert not torch.equal(plain, penalised)  # the penalty changes this completion
    assert len(set(penalised[0, 6:].tolist())) > len(set(plain[0, 6:].tolist()))


def test_stop_strings_end_the_text_even_across_tokens(tokenizer):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(context_length=32, emb_dim=32, n_heads=2, n_layers=1)).eval()
    prompt_text = "Every effort moves you"
    prompt_ids = text_to_token_ids(prompt_text, tokenizer)
    ids = generate(model, prompt_ids, 20)[0, prompt_ids.shape[1] :].tolist()
    pieces = [tokenizer.decode([i]) for i in ids]
    full = "".join(pieces)
    k = next(i for i in range(3, 19) if len(pieces[i]) >= 2 and len(pieces[i + 1]) >= 2)
    across = pieces[k][-2:] + pieces[k + 1][:2]  # ends two characters into token k + 1
    for stop in (across, pieces[k], "no such text"):
        s = Sampling(max_new_tokens=20, stop=(stop, "also absent"))
        streamed = list(stream_text(model, tokenizer, prompt_text, s))
        expected = full[: full.find(stop)] if stop in full else full
        assert "".join(streamed) == expected
        assert complete_text(model, tokenizer, prompt_text, sampling=s) == prompt_text + expected
    assert full.find(across) < len("".join(pieces[: k + 1]))  # it did span two tokens


def test_presence_and_frequency_penalties_are_openais_formula():
    import numpy as np

    from mygpt.inference.generate import Sampling, penalize_presence

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 11)).astype(np.float32)
    generated = np.array([[3, 3, 5, 3], [0, 1, 2, 10]])
    sampling = Sampling(presence_penalty=0.5, frequency_penalty=-1.25)
    expected = logits.copy()
    for row, ids in enumerate(generated):
        counts = np.bincount(ids, minlength=11)
        expected[row] -= 0.5 * (counts > 0) + -1.25 * counts
    got = penalize_presence(torch.from_numpy(logits), torch.from_numpy(generated), sampling)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
