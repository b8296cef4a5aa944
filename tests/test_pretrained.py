"""Downloading and loading GPT-2 checkpoints, against a loopback server with injected faults."""

import shutil

import numpy as np
import pytest
import torch
from conftest import CKPT_SHAPE
from http_server import Faults, FileServer
from reference import gpt2_logits
from safetensors.numpy import load_file, save_file

import mygpt.io.gpt2.convert as load
import mygpt.io.gpt2.download as download
from mygpt import DownloadError, UserError, download_gpt2, load_gpt2
from mygpt.io.gpt2 import RetryPolicy, gpt2_from_params

pytestmark = pytest.mark.slow  # starts scripts or TensorFlow: `pytest -m "not slow"` skips it

FAST = RetryPolicy(attempts=3, backoff_s=0.01, timeout_s=10)
DATA = "model.ckpt.data-00000-of-00001"
IDS = [15496, 11, 995, 6109, 3626, 6100, 345, 50256, 0, 42]


def hf_gpt2():
    """transformers' GPT2LMHeadModel of the test checkpoint's shape, randomly initialised."""
    from transformers import GPT2Config, GPT2LMHeadModel

    s = CKPT_SHAPE
    config = GPT2Config(
        vocab_size=s["n_vocab"],
        n_positions=s["n_ctx"],
        n_embd=s["n_embd"],
        n_layer=s["n_layer"],
        n_head=s["n_head"],
    )
    return GPT2LMHeadModel(config).eval()


def hf_reference_logits(arrays, ids):
    """transformers' logits with the same weights (its own Conv1D layout)."""
    model = hf_gpt2()
    state = {"wte.weight": arrays["wte"], "wpe.weight": arrays["wpe"]}
    state |= {"ln_f.weight": arrays["ln_f/g"], "ln_f.bias": arrays["ln_f/b"]}
    for name, value in arrays.items():
        if name.startswith("h"):
            layer, rest = name.split("/", 1)
            rest = rest.replace("/", ".").replace(".w", ".weight").replace(".b", ".bias")
            rest = rest.replace(".g", ".weight")
            state[f"h.{layer[1:]}.{rest}"] = value
    model.transformer.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def served_copy(tf_checkpoint, tmp_path):
    """A fresh copy of the served tree, so tests can alter it."""
    folder, _ = tf_checkpoint
    root = tmp_path / "served"
    shutil.copytree(folder, root / "124M", ignore=shutil.ignore_patterns("mygpt.safetensors"))
    return root


def assert_same_files(a, b):
    for name in download.OPENAI_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_download_load_and_exactness(tf_checkpoint, tmp_path):
    source, arrays = tf_checkpoint
    with FileServer(source.parent) as server:
        folder = download_gpt2("124M", tmp_path, base_url=server.url, retry=FAST)
    assert folder == tmp_path / "gpt2" / "124M"
    assert_same_files(folder, source)
    assert not list(folder.glob("*.part"))

    model = load_gpt2(folder)
    assert not model.training and model.cfg.qkv_bias and model.cfg.drop_rate == 0.0
    assert model.cfg.context_length == 128 and model.cfg.emb_dim == 64
    assert model.out_head.weight is model.tok_emb.weight
    with torch.no_grad():
        ours = model(torch.tensor([IDS]))[0].double().numpy()
    np.testing.assert_allclose(ours, gpt2_logits(arrays, IDS, n_head=4), atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours, hf_reference_logits(arrays, IDS), atol=1e-4, rtol=0)


def test_second_run_is_offline(tf_checkpoint, tmp_path):
    source, _ = tf_checkpoint
    with FileServer(source.parent) as server:
        download_gpt2("124M", tmp_path, base_url=server.url, retry=FAST)
        url = server.url
    # The server is gone: any request would fail, and none is made.
    assert download_gpt2("124M", tmp_path, base_url=url, retry=FAST) == tmp_path / "gpt2" / "124M"


def test_cut_transfer_resumes_with_range(tf_checkpoint, tmp_path):
    root = served_copy(tf_checkpoint, tmp_path)
    faults = Faults(cut={DATA, "encoder.json"})
    with FileServer(root, faults) as server:
        folder = download_gpt2("124M", tmp_path / "models", base_url=server.url, retry=FAST)
    assert_same_files(folder, root / "124M")
    data_requests = [r for p, r in faults.requests if p.endswith(DATA)]
    half = (root / "124M" / DATA).stat().st_size // 2
    assert data_requests == [None, f"bytes={half}-"]


def test_server_ignoring_range_restarts_the_file(tf_checkpoint, tmp_path):
    root = served_copy(tf_checkpoint, tmp_path)
    faults = Faults(cut={DATA}, ignore_range=True)
    with FileServer(root, faults) as server:
        folder = download_gpt2("124M", tmp_path / "models", base_url=server.url, retry=FAST)
    assert_same_files(folder, root / "124M")


def test_503_is_retried(tf_checkpoint, tmp_path):
    root = served_copy(tf_checkpoint, tmp_path)
    faults = Faults(fail_503={"hparams.json": 2})
    with FileServer(root, faults) as server:
        folder = download_gpt2("124M", tmp_path / "models", base_url=server.url, retry=FAST)
    assert [p for p, _ in faults.requests].count("/124M/hparams.json") == 3
    assert_same_files(folder, root / "124M")


def test_failure_names_the_file_and_hosts_and_leaves_nothing_loadable(tf_checkpoint, tmp_path):
    root = served_copy(tf_checkpoint, tmp_path)
    faults = Faults(cut={DATA})
    with FileServer(root, faults) as server:
        with pytest.raises(DownloadError) as err:
            download_gpt2(
                "124M",
                tmp_path / "models",
                base_url=server.url,
                retry=RetryPolicy(attempts=1, backoff_s=0.01),
            )
        message = str(err.value)
        assert message.startswith(f"could not download {DATA} (tried 127.0.0.1:")
        assert "--base-url" in message and "\n" not in message
        assert err.value.exit_code == 1
        folder = tmp_path / "models" / "gpt2" / "124M"
        assert not (folder / DATA).exists()
        assert (folder / (DATA + ".part")).stat().st_size == (
            root / "124M" / DATA
        ).stat().st_size // 2
        with pytest.raises(UserError, match=f"not a GPT-2 checkpoint folder .missing .*{DATA}"):
            load_gpt2(folder)
        # The next run resumes the part file and completes.
        download_gpt2("124M", tmp_path / "models", base_url=server.url, retry=FAST)
    assert_same_files(folder, root / "124M")


def test_official_hosts_fall_back_to_the_mirror_and_check_known_sizes(
    tf_checkpoint, tmp_path, monkeypatch
):
    root = served_copy(tf_checkpoint, tmp_path)
    bad_root = tmp_path / "bad"
    shutil.copytree(root, bad_root)
    (bad_root / "124M" / "vocab.bpe").write_bytes(b"truncated")
    sizes = {n: (root / "124M" / n).stat().st_size for n in download.OPENAI_FILES}
    monkeypatch.setitem(download.KNOWN_SIZES, "124M", sizes)
    with FileServer(bad_root) as bad, FileServer(root) as good:
        monkeypatch.setattr(download, "OPENAI_HOSTS", (bad.url, good.url))
        folder = download_gpt2("124M", tmp_path / "models", retry=FAST)
        assert [p for p, _ in good.faults.requests] == ["/124M/vocab.bpe"]
    assert_same_files(folder, root / "124M")
    # A local file of the wrong size is not taken as complete.
    (folder / "checkpoint").write_text("x")
    with FileServer(root) as good:
        monkeypatch.setattr(download, "OPENAI_HOSTS", (good.url,))
        download_gpt2("124M", tmp_path / "models", retry=FAST)
        assert [p for p, _ in good.faults.requests] == ["/124M/checkpoint"]
    assert_same_files(folder, root / "124M")


def test_unknown_size_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserError, match="valid sizes: 124M, 355M, 774M, 1558M"):
        download_gpt2("7B", tmp_path)


def test_converted_file_is_reused_and_rebuilt_when_stale_or_corrupt(
    tf_checkpoint, tmp_path, monkeypatch
):

    folder = served_copy(tf_checkpoint, tmp_path) / "124M"
    first = load_gpt2(folder)
    converted = folder / load.CONVERTED
    assert converted.is_file()
    ids = torch.tensor([IDS])
    with torch.no_grad():
        expected = first(ids)

    calls = []
    real_reader = load.read_tf_checkpoint
    monkeypatch.setattr(
        load, "read_tf_checkpoint", lambda f, out: calls.append(f) or real_reader(f, out)
    )
    with torch.no_grad():
        torch.testing.assert_close(load_gpt2(folder)(ids), expected, rtol=0, atol=0)
    assert calls == []  # no TensorFlow on a later start

    converted.write_bytes(converted.read_bytes()[:1000])  # corrupt
    with torch.no_grad():
        torch.testing.assert_close(load_gpt2(folder)(ids), expected, rtol=0, atol=0)
    assert len(calls) == 1

    hparams = folder / "hparams.json"
    hparams.write_text(hparams.read_text() + "\n")  # the source changed: stale
    load_gpt2(folder)
    assert len(calls) == 2


def test_shape_mismatch_names_the_variable(tf_checkpoint):
    _, arrays = tf_checkpoint
    hparams = {"n_vocab": 50257, "n_ctx": 128, "n_embd": 64, "n_head": 4, "n_layer": 2}
    bad = dict(arrays, **{"h1/mlp/c_fc/b": np.zeros(10, np.float32)})
    with pytest.raises(UserError, match=r"'h1/mlp/c_fc/b' has shape \(10,\), expected \(256,\)"):
        gpt2_from_params(bad, hparams)
    with pytest.raises(UserError, match="'wpe' has shape"):
        gpt2_from_params(arrays, dict(hparams, n_ctx=64))
    with pytest.raises(UserError, match="unexpected variables: h2/ln_1/g"):
        gpt2_from_params(dict(arrays, **{"h2/ln_1/g": np.ones(64, np.float32)}), hparams)


@pytest.mark.parametrize("layout", ["save_pretrained", "hub_original"])
def test_hf_source(tmp_path, layout):
    """Hub safetensors, as transformers saves them and as the hub's original files name them."""
    torch.manual_seed(0)
    reference = hf_gpt2()
    with torch.no_grad():  # biases and norms are zero/one at init: make them matter
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    repo = tmp_path / "served" / "openai-community" / "gpt2" / "resolve" / "main"
    reference.save_pretrained(repo)
    if layout == "hub_original":
        tensors = load_file(repo / "model.safetensors")
        tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
        for i in range(CKPT_SHAPE["n_layer"]):
            tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 128, 128), np.float32))
        save_file(tensors, repo / "model.safetensors")
    with FileServer(tmp_path / "served") as server:
        folder = download_gpt2("124M", tmp_path / "m", base_url=server.url, source="hf", retry=FAST)
    assert folder == tmp_path / "m" / "hf" / "openai-community" / "gpt2"
    model = load_gpt2(folder)
    with torch.no_grad():
        ours, theirs = model(torch.tensor([IDS])), reference(torch.tensor([IDS])).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
