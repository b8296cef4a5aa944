import pytest
import torch

from mygpt import GPTConfig, GPTModel, generate, sample_next_token

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
        sample_next_token(logits, 1.0, generator=torch.Generator().manual_seed(s), **kw).item()
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
