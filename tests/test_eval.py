"""`mygpt eval`: log-likelihoods packed as trees equal the book model's one sequence at a time;
sliding-window perplexity equals Hugging Face's guide run on transformers; the tasks read their
files as published, download once, and report under the harness's names; the judge through a
fake OpenAI endpoint and through `mygpt serve`. lm-eval itself: tests/test_lm_eval.py."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_in_process
from eval_items import hellaswag_records, lambada_records, wikitext_zip, write_jsonl
from http_server import FileServer
from serving_fixtures import serving, small_model

from mygpt import get_tokenizer, load_model
from mygpt.evaluation import datasets, tasks
from mygpt.evaluation.judge import judge_prompt, parse_score
from mygpt.evaluation.loglikelihood import Tree, encode_pair, score_trees, text_tree
from mygpt.evaluation.score import score_tokens
from mygpt.export.hf import export_hf
from mygpt.inference.precision import for_inference
from mygpt.tokenizer import ENDOFTEXT_ID


@pytest.fixture(scope="module")
def model(trained_model_file):
    return load_model(trained_model_file, "cpu")


@pytest.fixture(scope="module")
def fast(model):
    return for_inference(model, "float32")


def mygpt_eval(*args, monkeypatch, capsys):
    return run_in_process("mygpt", ["eval", *args], monkeypatch, capsys)


# --- log-likelihoods ---------------------------------------------------------------------


def reference_scores(model, tree: Tree) -> list[tuple[float, bool]]:
    """Each continuation alone, through the book's GPTModel, cut from the left as the
    harness cuts: (summed log-probability, every token the argmax)."""
    L = model.cfg.context_length
    out = []
    for c in tree.continuations:
        ids = torch.tensor((tree.context + c)[-(L + 1) :])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids[None, :-1])[0].double(), -1)[-len(c) :]
        target = ids[-len(c) :]
        picked = logprobs.gather(1, target[:, None]).sum().item()
        out.append((picked, bool((logprobs.argmax(-1) == target).all())))
    return out


@pytest.mark.parametrize("batch_tokens", [1, 60, 4096])
def test_tree_scores_equal_the_book_model_one_sequence_at_a_time(model, fast, batch_tokens):
    tok = get_tokenizer()
    trees = [
        text_tree(tok, "The function returns", [" None.", " a list of the values", " it"]),
        text_tree(tok, "", [" Every effort moves you"]),  # no context: <|endoftext|>
        text_tree(tok, "A module is a file ", ["containing Python definitions"]),
        Tree(tuple(range(300, 360)), ((11, 12, 13, 14, 15, 16, 17), (18,))),  # past the context
        Tree((5,), ((6,),)),
    ]
    scores = score_trees(fast, trees, batch_tokens)
    for tree, scored in zip(trees, scores, strict=True):
        assert len(scored) == len(tree.continuations)
        for s, (logprob, greedy), c in zip(
            scored, reference_scores(model, tree), tree.continuations, strict=True
        ):
            assert s.logprob == pytest.approx(logprob, abs=1e-4)
            assert (s.greedy, s.n_tokens) == (greedy, len(c))


def test_pairs_are_tokenized_as_the_harness_does(fast):
    tok = get_tokenizer()
    # A context's trailing space goes to the continuation, so " mat" stays one token.
    assert encode_pair(tok, "The cat sat on the ", "mat") == (
        tok.encode("The cat sat on the"),
        tok.encode(" mat"),
    )
    assert encode_pair(tok, "", " mat") == ([ENDOFTEXT_ID], tok.encode(" mat"))
    # The continuation is what the whole text's tokens hold after as many as the context's
    # own: "prefix" is one token, so nothing is left to score (the harness's quirk, kept).
    assert encode_pair(tok, "pre", "fix") == (tok.encode("pre"), [])
    [[empty]] = score_trees(fast, [text_tree(tok, "pre", ["fix"])])
    assert (empty.logprob, empty.n_tokens, empty.greedy) == (0, 0, True)


def test_hellaswag_records_are_read_as_the_harness_reads_them():
    record = {
        "activity_label": "Home and Garden",
        "ctx_a": "[header] How to plant bulbs [title] Choose a spot.",
        "ctx_b": "dig a hole",
        "endings": ["twice as deep as the bulb. [step] Water it.", " [substeps] Then wait. "],
        "label": "1",  # the hub's copy has text labels, the official file numbers
    }
    item = tasks.hellaswag_item(record)
    # Worked by hand from the harness's steps: strip; " [title]" -> ". "; [...] out; "  " -> " ".
    assert item.context == "Home and Garden: How to plant bulbs. Choose a spot. Dig a hole"
    assert item.choices == ("twice as deep as the bulb. Water it.", " Then wait.")
    assert item.gold == 1
    assert tasks.hellaswag_item({**record, "label": 0}).gold == 0


def test_lambada_scores_the_last_word_after_the_rest():
    assert tasks.lambada_item({"text": "he said hello to her"}) == ("he said hello to", " her")


# --- texts: sliding windows, bits per byte ------------------------------------------------


@pytest.fixture(scope="module")
def hf_model(model, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = export_hf(model, tmp_path_factory.mktemp("hf") / "hf")
    return transformers.GPT2LMHeadModel.from_pretrained(folder).eval()


def hf_guide_perplexity(hf_model, ids: list[int], max_length: int, stride: int) -> float:
    """Hugging Face's "Perplexity of fixed-length models" loop, as the guide writes it."""
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf_model(input_ids, labels=target_ids).loss
        # The guide subtracts one for the label shift; exactly, it drops the first label only.
        num_loss_tokens = (target_ids[:, 1:] != -100).sum().item()
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens)


@pytest.mark.parametrize("stride", [7, 24, 48])
def test_sliding_window_perplexity_equals_hugging_faces_guide(fast, hf_model, stride):
    from pydoc_text import pydoc_text

    ids = get_tokenizer().encode(pydoc_text()[:3000])
    window = 48  # inputs; the guide's window holds one more token, the last one predicted
    ours = score_tokens(fast, ids, context_length=window, stride=stride)
    assert ours.n_tokens == len(ids) - 1
    assert ours.perplexity == pytest.approx(
        hf_guide_perplexity(hf_model, ids, window + 1, stride), rel=1e-5
    )


def test_bits_per_byte_count_every_byte_of_the_text(fast, hf_model):
    text = "Ünïcode: naïve café — 1 + 1 == 2."
    ids = [ENDOFTEXT_ID, *get_tokenizer().encode(text)]
    with torch.no_grad():
        logprobs = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].double(), -1)
    nats = -logprobs[:-1].gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
    score = tasks.text_score(fast, get_tokenizer(), text, stride=16)
    assert score.n_tokens == len(ids) - 1
    assert score.bits_per_byte == pytest.approx(nats / math.log(2) / len(text.encode()), rel=1e-5)
    assert score.word_perplexity == pytest.approx(math.exp(nats / 9), rel=1e-5)  # 9 words


# --- the command ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eval-data")
    write_jsonl(folder / "hellaswag_val.jsonl", hellaswag_records(24))
    write_jsonl(folder / "lambada_test.jsonl", lambada_records(20))
    return folder


def test_a_task_downloads_once_and_reports_the_harness_names(
    trained_model_file, fast, data, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "results.json"
    with FileServer(data) as server:
        args = [trained_model_file, "--task", "hellaswag", "--limit", "20", "--json", out]
        args += ["--data-url", f"{server.url}/hellaswag_val.jsonl", "--data-dir", tmp_path]
        first = mygpt_eval(*args, monkeypatch=monkeypatch, capsys=capsys)
        second = mygpt_eval(*args, monkeypatch=monkeypatch, capsys=capsys)
        assert first.returncode == second.returncode == 0, first.stderr
        assert len(server.faults.requests) == 1  # the second run read the downloaded file
    result = json.loads(out.read_text())
    records = hellaswag_records(24)[:20]
    expected = tasks.hellaswag(fast, get_tokenizer(), records)
    assert result["results"] == {"hellaswag": expected}
    assert set(expected) == {"acc", "acc_norm", "acc_per_token"}
    assert result["n_items"] == 20
    assert f"{'hellaswag':<12} {'acc_norm':<16} {expected['acc_norm']:12.4f}" in first.stdout
    assert (tmp_path / "eval" / "hellaswag" / "hellaswag_val.jsonl").is_file()


def test_lambada_and_a_local_copy(trained_model_file, fast, data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results.json"
    args = ["--task", "lambada", "--data", data / "lambada_test.jsonl", "--json", out]
    result = mygpt_eval(trained_model_file, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())["results"]["lambada"]
    scores = tasks.lambada_scores(fast, get_tokenizer(), lambada_records(20))
    assert metrics["acc"] == np.mean([s.greedy for s in scores]) > 0
    assert metrics["perplexity"] == pytest.approx(math.exp(-np.mean([s.logprob for s in scores])))


def test_the_published_file_is_checked_and_a_wrong_one_removed(
    trained_model_file, data, tmp_path, monkeypatch, capsys
):
    with FileServer(data) as server:
        url = f"{server.url}/hellaswag_val.jsonl"
        published = datasets.Source((url,), "hellaswag_val.jsonl", n_items=10042)
        monkeypatch.setitem(datasets.SOURCES, "hellaswag", published)
        args = [trained_model_file, "--task", "hellaswag", "--data-dir", tmp_path]
        result = mygpt_eval(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    assert [x for x in result.stderr.splitlines() if x.strip() and "%|" not in x] == [
        f"error: hellaswag_val.jsonl from {url} is not the published file: "
        "24 records, the published file has 10042"
    ]
    assert not any((tmp_path / "eval" / "hellaswag").iterdir())


def test_wikitext_is_read_from_its_archive(trained_model_file, fast, tmp_path, monkeypatch, capsys):
    from pydoc_text import pydoc_text

    text = pydoc_text()[5000:9000]
    wikitext_zip(tmp_path / "wikitext-2-raw-v1.zip", "wikitext-2-raw/wiki.test.raw", text)
    out = tmp_path / "results.json"
    with FileServer(tmp_path) as server:
        args = ["--task", "wikitext2", "--data-url", f"{server.url}/wikitext-2-raw-v1.zip"]
        args += ["--data-dir", tmp_path / "cache", "--stride", "16", "--json", out]
        result = mygpt_eval(trained_model_file, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())["results"]["wikitext2"]
    score = tasks.text_score(fast, get_tokenizer(), text, stride=16)
    assert metrics["perplexity"] == pytest.approx(score.perplexity)
    assert metrics["bits_per_byte"] == pytest.approx(score.bits_per_byte)
    assert metrics["tokens"] == score.n_tokens == len(get_tokenizer().encode(text))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "judge"], "error: --data is required by judge"),
        (["--task", "hellaswag", "--data", "nowhere.jsonl"], "error: nowhere.jsonl: no such file"),
        (["--task", "lambada", "--data", "BAD"], "error: BAD: line 2: not JSON"),
        (["--task", "hellaswag", "--data", "NOENDINGS"], "error: hellaswag record 2: no field"),
        (["--task", "text", "--data", "EMPTY"], "error: EMPTY: is empty"),
        (["--task", "judge", "--data", "BOOK"], "error: --judge-url is required by judge"),
    ],
)
def test_user_errors_are_one_line(trained_model_file, tmp_path, monkeypatch, capsys, args, message):
    files = {
        "BAD": write_jsonl(tmp_path / "bad.jsonl", [{"text": "a b"}]),
        "NOENDINGS": write_jsonl(tmp_path / "h.jsonl", [*hellaswag_records(1), {"ctx": "x"}]),
        "EMPTY": tmp_path / "empty.txt",
        "BOOK": tmp_path / "book.json",
    }
    files["BAD"].write_text(files["BAD"].read_text() + "{not json\n")
    files["EMPTY"].write_text("  \n")
    files["BOOK"].write_text(json.dumps([{"instruction": "x", "input": "", "output": "y"}]))
    args = [str(files.get(a, a)) for a in args]
    message = message.replace("BAD", str(files["BAD"])).replace("EMPTY", str(files["EMPTY"]))
    result = mygpt_eval(trained_model_file, *args, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


# --- the judge ------------------------------------------------------------------------------


def test_scores_are_read_from_the_judges_reply():
    for reply, score in [
        ("85", 85),
        ("Score: 70/100", 70),
        ("**90**.", 90),
        ("I would give it 100.", 100),
        ("7.5 out of 10, so 75", 75),
        ("-5 or 250? No: 0", 0),
        ("I cannot score this.", None),
        ("", None),
    ]:
        assert parse_score(reply) == score, reply


class FakeJudge:
    """An OpenAI chat completions endpoint on loopback that replies from a list, in turn,
    and keeps the requests."""

    def __init__(self, replies: list[str]):
        self.replies, self.requests, self.lock = replies, [], threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.requests.append((self.path, body))
                    reply = judge.replies[(len(judge.requests) - 1) % len(judge.replies)]
                answer = json.dumps(
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": reply},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


BOOK_RECORDS = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue.", "model_response": "Red."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "model_response": "5"},
    {"instruction": "What is a module?", "input": "", "output": "A file of Python code."},
    {"instruction": "Say hello.", "input": "", "output": "Hello.", "model_response": "Hi."},
    {"instruction": "Give a synonym.", "input": "fast", "output": "quick"},
]


def test_the_judge_scores_given_responses_and_generates_the_missing_ones(
    trained_model_file, tmp_path, monkeypatch, capsys
):
    records = write_jsonl(tmp_path / "test.jsonl", BOOK_RECORDS)
    out = tmp_path / "scores.json"
    with FakeJudge(["85", "Score: 70/100", "I cannot score this.", "**90**."]) as judge:
        args = [trained_model_file, "--task", "judge", "--data", records, "--json", out]
        args += ["--judge-url", judge.url, "--judge-model", "llama3", "--judge-concurrency", "1"]
        args += ["--max-new-tokens", "20"]
        result = mygpt_eval(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr
    body = json.loads(out.read_text())
    assert body["results"]["judge"] == {
        "score": (85 + 70 + 90 + 85) / 4,
        "scored": 4,
        "unparsed": 1,
    }
    assert [s["score"] for s in body["samples"]] == [85, 70, None, 90, 85]
    # The missing responses are what `mygpt generate` writes for the same records, greedily.
    inp = write_jsonl(tmp_path / "missing.jsonl", [BOOK_RECORDS[2], BOOK_RECORDS[4]])
    gen = ["generate", trained_model_file, "--input", inp, "--output", tmp_path / "gen.jsonl"]
    gen += ["--temperature", "0", "--max-new-tokens", "20"]
    assert run_in_process("mygpt", gen, monkeypatch, capsys).returncode == 0
    generated = [json.loads(x)["model_response"] for x in (tmp_path / "gen.jsonl").open()]
    responses = [s["model_response"] for s in body["samples"]]
    assert [responses[2], responses[4]] == generated
    # The book's request: its prompt, temperature 0, seed 123.
    assert len(judge.requests) == 5
    for (path, request), sample, record in zip(
        judge.requests, body["samples"], BOOK_RECORDS, strict=True
    ):
        assert path == "/v1/chat/completions"
        assert request["model"] == "llama3"
        assert (request["temperature"], request["seed"]) == (0, 123)
        expected = judge_prompt({**record, "model_response": sample["model_response"]})
        assert request["messages"] == [{"role": "user", "content": expected}]


def test_an_unreachable_judge_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    records = write_jsonl(tmp_path / "test.jsonl", BOOK_RECORDS[:2])
    with FakeJudge(["1"]) as judge:
        url = judge.url  # a port that was free, and now is closed
    args = ["unused", "--task", "judge", "--data", records, "--judge-url", url]
    result = mygpt_eval(*args, "--judge-model", "x", monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the judge at {url} cannot be reached")


def test_mygpt_serve_can_be_the_judge(tmp_path, monkeypatch, capsys):
    records = write_jsonl(tmp_path / "test.jsonl", [BOOK_RECORDS[0], BOOK_RECORDS[3]])
    out = tmp_path / "scores.json"
    with serving(small_model(), max_batch=4) as (url, _):
        args = ["unused", "--task", "judge", "--data", records, "--json", out]
        args += ["--judge-url", f"{url}/v1", "--judge-model", "tiny"]
        result = mygpt_eval(*args, monkeypatch=monkeypatch, capsys=capsys)
    assert result.returncode == 0, result.stderr
    body = json.loads(out.read_text())
    summary = body["results"]["judge"]
    assert summary["scored"] + summary["unparsed"] == 2
    for sample in body["samples"]:  # a random model's reply: a score only if it holds one
        assert sample["score"] == parse_score(sample["reply"])


# --- while training -------------------------------------------------------------------------


SMALL = ["--n-layers", "2", "--emb-dim", "64", "--n-heads", "4", "--context-length", "64"]


def test_hellaswag_while_training_is_in_the_lines_and_the_checkpoint(data, tmp_path, v1_here):
    import re

    args = [*SMALL, "--max-steps", "12", "--save-every", "11", "--output-dir", tmp_path]
    args += ["--eval-task", "hellaswag", "--eval-task-data", data / "hellaswag_val.jsonl"]
    result = v1_here(*args, "--eval-task-every", "5", "--eval-task-limit", "16")
    assert result.returncode == 0, result.stderr
    found = re.findall(r"\(Step (\d+)\): Train loss [\d.]+, Val loss [\d.]+(.*)", result.stdout)
    assert [step for step, _ in found] == ["000000", "000005", "000010"]
    printed = [float(rest.removeprefix(", HellaSwag ")) for _, rest in found]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]
    assert state["task_steps"] == [0, 5, 10]
    assert [round(x, 4) for x in state["task_scores"]] == printed
    assert all(x * 16 == round(x * 16) for x in state["task_scores"])  # k of 16 items right
    assert f"HellaSwag: 16 items of {data / 'hellaswag_val.jsonl'}, every 5 steps" in result.stdout


def test_the_task_is_scored_at_loss_evaluations_only(data, tmp_path, v1_here):
    args = [*SMALL, "--eval-task", "hellaswag", "--eval-task-data", data / "hellaswag_val.jsonl"]
    result = v1_here(*args, "--eval-task-every", "7", "--output-dir", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --eval-task-every 7 must be a multiple of --eval-freq 5: "
        "the task is scored at loss evaluations"
    )
