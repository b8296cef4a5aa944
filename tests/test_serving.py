"""`mygpt serve` through the official `openai` client and raw HTTP: OpenAI's shapes, the same
text as generation alone, errors in OpenAI's shape, the key, the queue, a client that leaves."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import openai
import pytest
import torch
from conftest import run_in_process
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from serving_fixtures import CFG, BrokenOnce, SlowEngine, serving, small_model

from mygpt import complete_text, get_tokenizer
from mygpt.io.model_files import save_model
from mygpt.tokenizer import ENDOFTEXT_ID

PROMPTS = ["Every effort moves you", "I had always thought", "The", "Hello, world", "x" * 30]


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def server(model):
    with serving(model) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0)


def request(url: str, method: str, path: str, body=None, headers=None, raw: bytes | None = None):
    """(status, headers, parsed JSON or text) of one plain HTTP request."""
    parts = urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    all_headers = {"Content-Type": "application/json"} | (headers or {})
    connection.request(method, path, body=data, headers=all_headers)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    try:
        return response.status, dict(response.getheaders()), json.loads(text)
    except ValueError:
        return response.status, dict(response.getheaders()), text


def alone(model, prompt: str, n: int) -> str:
    """v2's path: the chat's one-sequence generation of the book's model, greedy."""
    tokenizer = get_tokenizer()
    return complete_text(model, tokenizer, prompt, n, eos_id=ENDOFTEXT_ID).removeprefix(prompt)


def test_a_greedy_completion_equals_v2s_and_mygpt_generates(
    model, client, tmp_path, monkeypatch, capsys
):
    for prompt in PROMPTS:
        reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=12, temperature=0)
        assert reply.object == "text_completion" and reply.model == "tiny"
        (choice,) = reply.choices
        assert choice.text == alone(model, prompt, 12)
        assert choice.finish_reason in ("stop", "length")
        n_prompt = len(get_tokenizer().encode(prompt))
        assert reply.usage.prompt_tokens == n_prompt
        assert reply.usage.total_tokens == n_prompt + reply.usage.completion_tokens
    path = tmp_path / "model.safetensors"
    save_model(model, path)
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    args = ["generate", path, "--input", inp, "--output", out, "--temperature", "0"]
    done = run_in_process("mygpt", [*args, "--max-new-tokens", "12"], monkeypatch, capsys)
    assert done.returncode == 0, done.stderr
    generated = [json.loads(line)["completion"] for line in out.read_text().splitlines()]
    served = [
        client.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0)
        .choices[0]
        .text
        for p in PROMPTS
    ]
    assert generated == served


def test_streamed_chunks_put_together_equal_the_whole(client):
    for seed, prompt in enumerate(PROMPTS):
        options = dict(model="tiny", prompt=prompt, max_tokens=15, temperature=1.0, seed=seed)
        whole = client.completions.create(**options)
        chunks = list(
            client.completions.create(
                **options, stream=True, stream_options={"include_usage": True}
            )
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
        assert all(c.id == chunks[0].id and c.created and c.model == "tiny" for c in chunks)
        assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
        assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_chat_streams_the_role_then_the_content(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    options = dict(model="tiny", messages=messages, max_tokens=10, temperature=0)
    whole = client.chat.completions.create(**options)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    chunks = list(
        client.chat.completions.create(
            **options, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage
    # A base model's template: a transcript that ends with "Assistant:".
    prompt = "Be brief.\nUser: Hi!\nAssistant:"
    assert whole.usage.prompt_tokens == len(get_tokenizer().encode(prompt))


def test_32_concurrent_clients_each_get_the_text_they_get_alone(client):
    jobs = [
        dict(prompt=PROMPTS[i % len(PROMPTS)] + " " * (i // 5), max_tokens=4 + i % 13, seed=i)
        for i in range(32)
    ]

    def run(job):
        temperature = 0 if job["seed"] % 2 else 0.9
        return (
            client.completions.create(model="tiny", temperature=temperature, **job).choices[0].text
        )

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(run, jobs))
    assert concurrent == sequential


def test_logprobs_and_echo_score_the_prompt_as_the_book_model_does(model, client):
    tokenizer = get_tokenizer()
    prompt = "I had always thought Jack Gisburn rather a cheap genius"
    ids = tokenizer.encode(prompt)
    reply = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=3, temperature=0
    )
    lp = reply.choices[0].logprobs
    assert reply.choices[0].text == prompt and "".join(lp.tokens) == prompt
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.text_offset == [len(tokenizer.decode(ids[:i])) for i in range(len(ids))]
    with torch.no_grad():
        reference = model(torch.tensor([ids]))[0, :-1].log_softmax(-1)
    expected = reference.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(lp.token_logprobs[1:]), expected, rtol=0, atol=1e-4)
    assert all(len(top) == 3 for top in lp.top_logprobs[1:])
    generated = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=5, logprobs=2, temperature=0
    )
    glp = generated.choices[0].logprobs
    assert len(glp.tokens) == generated.usage.completion_tokens
    for token, logprob, top in zip(glp.tokens, glp.token_logprobs, glp.top_logprobs, strict=True):
        assert max(top.values()) == pytest.approx(logprob)  # greedy: the likeliest
        assert top[token] == pytest.approx(logprob)


def test_lists_of_prompts_and_n_choices(client):
    reply = client.completions.create(
        model="tiny", prompt=PROMPTS[:2], n=2, max_tokens=6, temperature=1, seed=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text != reply.choices[1].text  # n samples of one prompt
    tokenizer = get_tokenizer()
    assert reply.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in PROMPTS[:2])
    ids = client.completions.create(
        model="tiny", prompt=tokenizer.encode(PROMPTS[0]), max_tokens=6, temperature=0
    )
    text = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=6, temperature=0)
    assert ids.choices[0].text == text.choices[0].text


def test_models_health_tokenize_and_detokenize(server, client):
    url, _ = server
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert request(url, "GET", "/health")[2] == {"status": "ok"}
    text = "Héllo wörld <|endoftext|> 🙂"
    status, _, body = request(url, "POST", "/tokenize", {"content": text})
    tokenizer = get_tokenizer()
    assert status == 200 and body["tokens"] == tokenizer.encode(text, disallowed_special=())
    special = request(url, "POST", "/tokenize", {"content": text, "add_special": True})[2]
    assert ENDOFTEXT_ID in special["tokens"]
    pieces = request(url, "POST", "/tokenize", {"content": "Hello world", "with_pieces": True})[2]
    assert pieces["tokens"] == [{"id": 15496, "piece": "Hello"}, {"id": 995, "piece": " world"}]
    assert request(url, "POST", "/detokenize", {"tokens": body["tokens"]})[2] == {"content": text}


def test_metrics_are_prometheus_text(server, client):
    url, _ = server
    client.completions.create(model="tiny", prompt="Hi", max_tokens=3, temperature=0)
    status, headers, text = request(url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {f: {s.name: s.value for s in families[f].samples} for f in families}
    assert value["mygpt_requests"]["mygpt_requests_total"] >= 1
    assert value["mygpt_generation_tokens"]["mygpt_generation_tokens_total"] >= 3
    assert value["mygpt_prompt_tokens"]["mygpt_prompt_tokens_total"] >= 1
    assert families["mygpt_num_requests_running"].type == "gauge"
    assert families["mygpt_num_requests_waiting"].type == "gauge"
    for name in ("mygpt_time_to_first_token_seconds", "mygpt_inter_token_latency_seconds"):
        assert families[name].type == "histogram"
        assert value[name][name + "_count"] >= 1


BAD = [  # (path, body, status, param, words in the message)
    (
        "/v1/completions",
        {"prompt": "x", "temperature": 5},
        400,
        "temperature",
        "less than or equal to 2",
    ),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, "top_p", "greater than 0"),
    ("/v1/completions", {"prompt": "x", "n": 0}, 400, "n", "greater than or equal to 1"),
    ("/v1/completions", {"prompt": "x", "logprobs": 6}, 400, "logprobs", "less than or equal to 5"),
    (
        "/v1/completions",
        {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]},
        400,
        "stop",
        "at most 4",
    ),
    ("/v1/completions", {"prompt": "x", "stop": ""}, 400, "stop", "must not be empty"),
    (
        "/v1/completions",
        {"prompt": "x", "max_tokens": -1},
        400,
        "max_tokens",
        "greater than or equal to 0",
    ),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty", "2"),
    ("/v1/completions", {"prompt": "x", "seed": -1}, 400, "seed", "greater than or equal to 0"),
    ("/v1/completions", {"prompt": [[]]}, 400, "prompt", "at least one"),
    ("/v1/completions", {"prompt": [99999999]}, 400, "prompt", "token ids must be"),
    ("/v1/completions", {"prompt": "x", "suffix": "y"}, 400, "suffix", "not supported"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt", "Field required"),
    (
        "/v1/completions",
        {"prompt": " x" * 100, "max_tokens": 50},
        400,
        "max_tokens",
        "150 tokens (100 in the prompt, 50 in the completion)",
    ),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", "at least 1"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages.0.role",
        "Input should be",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 500},
        400,
        "max_tokens",
        "maximum context length is 128",
    ),
    ("/detokenize", {"tokens": [50257]}, 400, "tokens", "not in the vocabulary"),
    ("/tokenize", {"text": "x"}, 400, "content", "Field required"),
]


@pytest.mark.parametrize(("path", "body", "status", "param", "words"), BAD)
def test_bad_requests_get_openais_error_object(server, path, body, status, param, words):
    got, _, reply = request(server[0], "POST", path, body)
    assert got == status
    assert set(reply) == {"error"} and set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["param"] == param and words in reply["error"]["message"]
    assert reply["error"]["type"] == "invalid_request_error"


def test_bad_json_unknown_paths_methods_and_big_bodies(server, client):
    url, _ = server
    status, _, reply = request(url, "POST", "/v1/completions", raw=b'{"prompt": "x",')
    assert status == 400 and "not valid JSON" in reply["error"]["message"]
    status, _, reply = request(url, "GET", "/v1/nothing")
    assert status == 404 and reply["error"]["code"] == "not_found"
    status, _, reply = request(url, "GET", "/v1/completions")
    assert status == 405 and "error" in reply
    status, _, reply = request(url, "POST", "/v1/completions", {"prompt": "x" * (2 << 20)})
    assert status == 413 and "larger than" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", max_tokens=1000)
    assert e.value.status_code == 400 and e.value.body["param"] == "max_tokens"


def test_the_api_key_is_required_where_set(model):
    with serving(model, api_key="sesame") as (url, _):
        status, _, reply = request(url, "POST", "/v1/completions", {"prompt": "x"})
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        assert (
            request(url, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        )
        assert request(url, "GET", "/health")[0] == 200 and request(url, "GET", "/")[0] == 200
        good = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(model="tiny", prompt="x", max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_a_full_queue_answers_503_with_retry_after(model):
    with serving(model, engine_class=SlowEngine, max_batch=1, max_queue=0) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        stream = client.completions.create(model="tiny", prompt="a", max_tokens=50, stream=True)
        next(iter(stream))  # it runs: the only slot is taken
        status, headers, reply = request(url, "POST", "/v1/completions", {"prompt": "b"})
        assert status == 503 and headers["retry-after"] == "1"
        assert reply["error"]["code"] == "queue_full"
        stream.close()


def test_a_client_that_leaves_mid_stream_frees_its_slot_within_a_step(model):
    with serving(model, engine_class=SlowEngine, max_batch=1) as (url, app):
        engine = app.state.server.engine
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        stream = client.completions.create(model="tiny", prompt="a", max_tokens=100, stream=True)
        chunks = iter(stream)
        for _ in range(3):
            next(chunks)
        stream.close()  # the connection closes
        deadline = time.monotonic() + 5
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.running
        # The slot serves the next request, which finishes normally.
        reply = client.completions.create(model="tiny", prompt="b", max_tokens=3, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length")


def test_a_client_that_leaves_a_plain_request_frees_its_slot(model):
    with serving(model, engine_class=SlowEngine, max_batch=1) as (url, app):
        engine = app.state.server.engine
        parts = urlparse(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        body = json.dumps({"prompt": "a", "max_tokens": 100})
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        deadline = time.monotonic() + 5
        while not engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        sequence = engine.running[0]
        connection.close()
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sequence.finish_reason == "cancelled" and len(sequence.tokens) < 100


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 2000)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = [
    "prompt",
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stream",
    "stop",
    "seed",
    "logprobs",
    "echo",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "stream_options",
    "best_of",
    "suffix",
    "max_completion_tokens",
    "top_logprobs",
    "content",
    "tokens",
    "add_special",
    "with_pieces",
]
bodies = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8) | json_values
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=30)}
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.sampled_from(["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"]),
    body=bodies,
    chat=messages,
    use_messages=st.booleans(),
)
def test_nothing_a_client_sends_gets_a_500(server, path, body, chat, use_messages):
    if use_messages and isinstance(body, dict) and path.endswith("chat/completions"):
        body = body | {"messages": chat}
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = min(body["max_tokens"], 8)  # keeps the valid ones short
    status, _, reply = request(server[0], "POST", path, body)
    assert status < 500, reply
    if status >= 400:
        assert set(reply["error"]) == {"message", "type", "param", "code"}


def test_the_context_is_the_models(server, client):
    assert client.models.list().data[0].model_extra["max_model_len"] == CFG.context_length


def test_a_failing_step_fails_its_requests_and_the_server_goes_on(model, capsys):
    with serving(model, engine_class=BrokenOnce) as (url, _):
        status, _, _ = request(url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 3})
        assert status == 500  # a bug, not the client's doing: said in the server's log
        assert "a bug in a step" in capsys.readouterr().err
        status, _, reply = request(url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 3})
        assert status == 200 and reply["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_whole_context_can_be_scored_but_not_continued(client):
    ids = list(range(1000, 1000 + CFG.context_length))
    scored = client.completions.create(
        model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=0
    )
    assert len(scored.choices[0].logprobs.token_logprobs) == CFG.context_length
    with pytest.raises(openai.BadRequestError, match="takes 1 to 127"):
        client.completions.create(model="tiny", prompt=ids, max_tokens=0)
