"""The batching engine: a request's tokens do not depend on what else runs, and each sequence
joins, ends and frees its slot as it should."""

from __future__ import annotations

import pytest
import torch

from mygpt import GPTConfig, GPTModel, get_tokenizer
from mygpt.inference.engine import Engine, Request
from mygpt.inference.generate import Sampling, generate
from mygpt.inference.precision import for_inference
from mygpt.tokenizer import ENDOFTEXT_ID

CFG = GPTConfig(
    vocab_size=50257, context_length=96, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0
)
PROMPT_LENGTHS = (3, 17, 40, 1, 70, 5, 33)


@pytest.fixture(scope="module")
def model() -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(CFG).eval()


@pytest.fixture(scope="module")
def prompts() -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(1)
    return [
        tuple(torch.randint(0, CFG.vocab_size, (n,), generator=g).tolist()) for n in PROMPT_LENGTHS
    ]


def run_alone(fast, request: Request, **engine_options) -> tuple[list[int], list[float]]:
    engine = Engine(fast, get_tokenizer(), **engine_options)
    sequence = engine.add(request)
    logprobs = [u.logprob for u in _drain(engine)]
    return sequence.tokens, logprobs


def _drain(engine: Engine) -> list:
    updates = []
    while engine.busy:
        updates += engine.step()
    return updates


def run_staggered(fast, requests: list[Request], max_batch: int, every: int = 2):
    """Each request added `every` steps after the one before: they join others mid-way."""
    engine = Engine(fast, get_tokenizer(), max_batch=max_batch, prefill_chunk=16)
    sequences, logprobs = [], {}
    for request in requests:
        sequences.append(engine.add(request))
        for _ in range(every):
            for u in engine.step():
                logprobs.setdefault(id(u.sequence), []).append(u.logprob)
            assert len(engine.running) <= max_batch
    for u in _drain(engine):
        logprobs.setdefault(id(u.sequence), []).append(u.logprob)
    return [(s.tokens, logprobs[id(s)]) for s in sequences]


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "int8"])
def test_greedy_tokens_and_logprobs_equal_the_request_alone(model, prompts, precision):
    fast = for_inference(model, precision)
    requests = [
        Request(p, Sampling(max_new_tokens=12 + i), logprobs=0) for i, p in enumerate(prompts)
    ]
    alone = [run_alone(fast, r, prefill_chunk=16) for r in requests]
    for max_batch in (3, 16):
        batched = run_staggered(fast, requests, max_batch)
        for (tokens, logprobs), (ref_tokens, ref_logprobs) in zip(batched, alone, strict=True):
            assert tokens == ref_tokens
            assert logprobs == ref_logprobs  # bit for bit, not approximately


def test_seeded_sampling_is_the_same_whatever_else_runs(model, prompts):
    fast = for_inference(model, "float32")
    sampling = Sampling(max_new_tokens=15, temperature=1.0, top_k=50, top_p=0.95)
    requests = [Request(p, sampling, seed=100 + i) for i, p in enumerate(prompts)]
    alone = [run_alone(fast, r, prefill_chunk=16)[0] for r in requests]
    batched = [tokens for tokens, _ in run_staggered(fast, requests, max_batch=4, every=1)]
    assert batched == alone
    assert len({tuple(t) for t in alone}) == len(alone)  # the seeds do make them differ
    assert run_alone(fast, Request(prompts[0], sampling, seed=7))[0] != alone[0]


def test_engine_agrees_with_the_book_model_and_generate(model, prompts):
    fast = for_inference(model, "float32")
    for prompt in prompts[:4]:
        tokens, logprobs = run_alone(fast, Request(prompt, Sampling(max_new_tokens=10), logprobs=0))
        ids = torch.tensor([prompt])
        assert tokens == generate(model, ids, 10)[0, len(prompt) :].tolist()
        # The book's model over the whole text: each generated token's log-probability.
        full = torch.tensor([[*prompt, *tokens]])
        with torch.no_grad():
            reference = model(full)[0, len(prompt) - 1 : -1].log_softmax(-1)
        expected = reference.gather(1, torch.tensor(tokens)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(logprobs), expected, rtol=0, atol=1e-4)


def test_a_long_prompt_is_prefilled_in_chunks_without_stalling_the_others(model, prompts):
    fast = for_inference(model, "float32")
    engine = Engine(fast, get_tokenizer(), max_batch=4, prefill_chunk=16)
    first = engine.add(Request(prompts[0], Sampling(max_new_tokens=30)))
    engine.step()
    long = engine.add(Request(prompts[4], Sampling(max_new_tokens=5)))  # 70 tokens: 5 chunks
    steps_to_first_token = 0
    while not long.tokens:
        before = len(first.tokens)
        engine.step()
        steps_to_first_token += 1
        assert len(first.tokens) == before + 1  # a token every step, chunks or not
    assert steps_to_first_token == 5


def test_finish_reasons_and_text(model):
    tokenizer = get_tokenizer()
    fast = for_inference(model, "float32")
    prompt = tuple(tokenizer.encode("Every effort moves you"))
    tokens, _ = run_alone(fast, Request(prompt, Sampling(max_new_tokens=20)))
    text = tokenizer.decode(tokens)
    engine = Engine(fast, tokenizer)
    by_length = engine.add(Request(prompt, Sampling(max_new_tokens=20)))
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    by_stop = engine.add(Request(prompt, Sampling(max_new_tokens=20, stop=(stop,))))
    by_eos = engine.add(Request(prompt, Sampling(max_new_tokens=20, eos_id=tokens[3])))
    by_context = engine.add(
        Request(tuple(range(CFG.context_length - 4)), Sampling(max_new_tokens=20))
    )
    nothing = engine.add(Request(prompt, Sampling(max_new_tokens=0)))
    _drain(engine)
    assert (by_length.finish_reason, by_length.text, by_length.tokens) == ("length", text, tokens)
    assert by_stop.finish_reason == "stop" and by_stop.text == text[: text.index(stop)]
    assert by_eos.finish_reason == "stop" and by_eos.tokens == tokens[:4]
    assert by_eos.text == tokenizer.decode(tokens[:3])  # the end token is not text
    assert by_context.finish_reason == "length" and len(by_context.tokens) == 4
    assert (nothing.finish_reason, nothing.tokens) == ("length", [])


def test_slots_are_reused_and_a_cancelled_sequence_frees_its_slot(model, prompts):
    fast = for_inference(model, "int8")
    engine = Engine(fast, get_tokenizer(), max_batch=2)
    sampling = Sampling(max_new_tokens=6, eos_id=ENDOFTEXT_ID)
    sequences = [engine.add(Request(p, sampling)) for p in prompts]
    engine.step()
    engine.cancel(sequences[0])
    engine.step()
    assert sequences[0] not in engine.running and sequences[2] in engine.running
    _drain(engine)
    assert all(s.finished for s in sequences)
    assert sequences[0].finish_reason == "cancelled"
    assert all(len(s.tokens) == 6 for s in sequences[1:])


def test_prompts_that_leave_no_room_are_refused(model):
    engine = Engine(for_inference(model, "float32"), get_tokenizer())
    for prompt in ((), tuple(range(CFG.context_length))):
        with pytest.raises(ValueError, match="takes 1 to 95"):
            engine.add(Request(prompt))


def test_prompt_logprobs_equal_the_book_model_in_any_chunking(model, prompts):
    fast = for_inference(model, "float32")
    prompt = prompts[4]  # 70 tokens
    with torch.no_grad():
        reference = model(torch.tensor([prompt]))[0].log_softmax(-1)
    expected = reference[:-1].gather(1, torch.tensor(prompt[1:])[:, None])[:, 0]
    expected_top = reference[:-1].topk(3)
    scored = []
    for chunk in (16, 256):
        engine = Engine(fast, get_tokenizer(), prefill_chunk=chunk)
        other = engine.add(Request(prompts[1], Sampling(max_new_tokens=30)))
        engine.step()
        sequence = engine.add(Request(prompt, Sampling(max_new_tokens=0), prompt_logprobs=3))
        _drain(engine)
        assert sequence.tokens == [] and sequence.finish_reason == "length" and other.finished
        chosen = torch.tensor([lp for lp, _ in sequence.prompt_logprobs])
        torch.testing.assert_close(chosen, expected, rtol=0, atol=1e-4)
        for (_, top), ids in zip(sequence.prompt_logprobs, expected_top.indices, strict=True):
            assert list(top) == ids.tolist()
        scored.append(sequence.prompt_logprobs)
    assert scored[0] == scored[1]  # 5 chunks or 1: bit for bit


def test_presence_and_frequency_penalties_follow_openai_and_generate(model, prompts):
    fast = for_inference(model, "float32")
    sampling = Sampling(max_new_tokens=20, presence_penalty=-2.0, frequency_penalty=-1.0)
    for prompt in prompts[:3]:
        tokens, _ = run_alone(fast, Request(prompt, sampling))
        ids = torch.tensor([prompt])
        assert tokens == generate(model, ids, sampling=sampling)[0, len(prompt) :].tolist()
        assert tokens != run_alone(fast, Request(prompt, Sampling(max_new_tokens=20)))[0]
