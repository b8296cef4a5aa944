"""mygpt.export: the Hugging Face folder against transformers, the GGUF file read back with gguf."""

import json
import logging
import subprocess
import sys

import gguf
import numpy as np
import pytest
import torch
from conftest import ROOT, pydoc_text, run_in_process

from mygpt import (
    DownloadSettings,
    GPTConfig,
    GPTModel,
    UserError,
    export_gguf,
    export_hf,
    generate,
    load_model,
    save_model,
)
from mygpt.export.gguf_file import gguf_tensors

SHAPES = {  # (tied, qkv_bias): GPT-2's own form, the book's v1 model, and the two others
    "gpt2": (True, True),
    "book": (False, False),
    "tied-nobias": (True, False),
    "untied-bias": (False, True),
}
ODD = dict(vocab_size=50257, context_length=40, emb_dim=36, n_heads=3, n_layers=3)


def make_model(tied: bool, qkv_bias: bool, **shape) -> GPTModel:
    torch.manual_seed(1)
    model = GPTModel(GPTConfig(**{**ODD, **shape}, drop_rate=0.1, qkv_bias=qkv_bias))
    for p in model.parameters():  # LayerNorms start at 1 and 0: make every tensor distinct
        p.data.add_(torch.randn_like(p) * 0.02)
    return (model.tie_weights() if tied else model).eval()


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """name -> (model, exported folder), for each form in SHAPES."""
    out = {}
    for name, (tied, bias) in SHAPES.items():
        model = make_model(tied, bias)
        out[name] = model, export_hf(model, tmp_path_factory.mktemp("hf") / name)
    return out


@pytest.mark.parametrize("name", SHAPES)
def test_transformers_loads_it_cleanly_with_equal_logits(hf_folders, name, caplog):
    from transformers import GPT2LMHeadModel

    model, folder = hf_folders[name]
    with caplog.at_level(logging.WARNING):
        hf, info = GPT2LMHeadModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    assert "newly initialized" not in caplog.text
    assert hf.config.tie_word_embeddings == model.is_tied
    assert (hf.lm_head.weight is hf.transformer.wte.weight) == model.is_tied
    ids = torch.randint(
        0, 50257, (2, ODD["context_length"]), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        diff = (hf.eval()(ids).logits - model(ids)).abs().max().item()
    assert diff < 1e-4


def test_the_book_model_exports_untied_with_zero_qkv_biases(hf_folders):
    from safetensors.torch import load_file

    model, folder = hf_folders["book"]
    tensors = load_file(folder / "model.safetensors")
    assert torch.equal(tensors["lm_head.weight"], model.out_head.weight)
    assert not tensors["transformer.h.0.attn.c_attn.bias"].any()
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["architectures"] == ["GPT2LMHeadModel"]
    assert config["n_ctx"] == config["n_positions"] == ODD["context_length"]
    assert config["activation_function"] == "gelu_new" and config["attn_pdrop"] == 0.1
    gpt2 = load_file(hf_folders["gpt2"][1] / "model.safetensors")
    assert "lm_head.weight" not in gpt2  # tied: stored once, as the hub's GPT-2


@pytest.mark.parametrize("name", SHAPES)
def test_round_trip_through_init_from_is_bit_identical(hf_folders, name):
    model, folder = hf_folders[name]
    back = load_model(folder)
    assert back.is_tied == model.is_tied and back.cfg.qkv_bias == model.cfg.qkv_bias
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_tokenizer_gives_mygpt_ids_offline(hf_folders, tokenizer):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(hf_folders["gpt2"][1])
    text = pydoc_text()[:20_000] + "<|endoftext|>  Ünïcödé \t\n 🙂 it's"
    assert hf(text)["input_ids"] == tokenizer.encode(text, allowed_special="all")
    assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == 50256
    assert hf.convert_tokens_to_ids("<|endoftext|>") == 50256


def test_pipeline_greedy_completion_equals_mygpt(hf_folders, tokenizer):
    from transformers import pipeline

    model, folder = hf_folders["book"]
    prompt = "The return statement"
    generator = pipeline("text-generation", model=str(folder), device="cpu")
    theirs = generator(prompt, max_new_tokens=20, do_sample=False)[0]["generated_text"]
    ids = torch.tensor([tokenizer.encode(prompt)])
    assert theirs == tokenizer.decode(generate(model, ids, 20)[0].tolist())


# GGUF: each outtype's largest error relative to a tensor's largest value.
TOLERANCE = {"f32": 0.0, "f16": 1e-3, "bf16": 8e-3, "q8_0": 8e-3}


@pytest.mark.parametrize("outtype", TOLERANCE)
@pytest.mark.parametrize("name", ["gpt2", "book"])
def test_gguf_reads_back_as_llama_cpp_expects(tmp_path, name, outtype):
    model = make_model(*SHAPES[name], emb_dim=64, n_heads=4)  # q8_0 needs rows of 32-blocks
    path = export_gguf(model, tmp_path / "m.gguf", outtype)
    reader = gguf.GGUFReader(path)

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == "gpt2"
    assert field("gpt2.context_length") == ODD["context_length"]
    assert (field("gpt2.embedding_length"), field("gpt2.feed_forward_length")) == (64, 256)
    assert (field("gpt2.block_count"), field("gpt2.attention.head_count")) == (3, 4)
    assert field("gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == 50257 and tokens[50256] == "<|endoftext|>" and tokens[464] == "The"
    assert field("tokenizer.ggml.merges")[0] == "Ġ t"
    assert field("tokenizer.ggml.eos_token_id") == field("tokenizer.ggml.bos_token_id") == 50256

    source = dict(gguf_tensors(model))
    stored = {t.name: t for t in reader.tensors}
    names = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"}
    per_block = ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down")
    names |= {f"blk.{i}.{t}.{p}" for i in range(3) for t in per_block for p in ("weight", "bias")}
    assert stored.keys() == names | ({"output.weight"} if name == "book" else set())
    assert list(stored["blk.0.attn_qkv.weight"].shape) == [64, 192]  # ggml's order: (in, out)
    assert list(stored["token_embd.weight"].shape) == [64, 50257]
    wanted = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}[outtype]
    for tensor_name, t in stored.items():
        kept_f32 = len(t.shape) == 1 or tensor_name == "position_embd.weight"
        assert t.tensor_type.name == ("F32" if kept_f32 else wanted), tensor_name
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(source[tensor_name].shape)
        error = np.abs(values - source[tensor_name]).max()
        assert error <= TOLERANCE[outtype] * np.abs(source[tensor_name]).max(), tensor_name


def test_q8_0_of_rows_not_whole_blocks_falls_back_to_f16(tmp_path):
    model = make_model(True, True, emb_dim=48)  # 48 inputs: 1.5 blocks; 192: 6
    path = export_gguf(model, tmp_path / "m.gguf", "q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_qkv.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q8_0"


def test_modelfile_beside_the_gguf(tmp_path):
    export_gguf(make_model(True, True), tmp_path / "tiny.gguf", "f32")
    lines = (tmp_path / "tiny.Modelfile").read_text().splitlines()
    assert lines[0] == "FROM ./tiny.gguf"
    assert "PARAMETER num_ctx 40" in lines and 'PARAMETER stop "<|endoftext|>"' in lines
    assert "PARAMETER temperature 0.7" in lines and "PARAMETER top_k 40" in lines


def export(*args, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mygpt.export", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)


def test_command_exports_a_v1_file_and_refuses_bad_outputs(tmp_path, monkeypatch, capsys):
    model = make_model(False, False, emb_dim=64, n_heads=4)
    save_model(model, tmp_path / "model.safetensors")
    src = tmp_path / "model.safetensors"
    done = export(src, "--to", "gguf", tmp_path / "out" / "m.gguf", "--outtype", "q8_0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Wrote {tmp_path / 'out' / 'm.gguf'}: GGUF (q8_0), ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.Modelfile", "m.gguf"]
    hf = run_in_process("mygpt.export", (src, "--to", "hf", tmp_path / "hf"), monkeypatch, capsys)
    assert hf.returncode == 0, hf.stderr
    assert load_model(tmp_path / "hf").state_dict().keys() == model.state_dict().keys()

    before = (tmp_path / "out" / "m.gguf").read_bytes()
    cases = [
        ((src, "--to", "gguf", tmp_path / "out" / "m.gguf"), "m.gguf: exists; give --force"),
        ((src, "--to", "hf", src / "x"), "a part of its folder is a file"),
        ((src, "--to", "hf", src), f"is or holds SOURCE {src}; write the export elsewhere"),
        ((src, "--to", "hf", src, "--force"), f"is or holds SOURCE {src}"),
        ((src, "--to", "hf", tmp_path, "--force"), f"is or holds SOURCE {src}"),
        ((tmp_path / "none", "--to", "hf", tmp_path / "n"), "none: no such file or folder"),
        ((src, "--to", "gguf", tmp_path / "q.gguf", "--outtype", "q4"), "invalid choice: 'q4'"),
        ((src, "--to", "hf", tmp_path / "h2", "--outtype", "f16"), "--outtype is for --to gguf"),
    ]
    for args, message in cases:
        out = run_in_process("mygpt.export", args, monkeypatch, capsys)
        assert out.returncode == 2, (args, out.stderr)
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert (tmp_path / "out" / "m.gguf").read_bytes() == before
    forced = run_in_process(
        "mygpt.export",
        (src, "--to", "gguf", tmp_path / "out" / "m.gguf", "--outtype", "f32", "--force"),
        monkeypatch,
        capsys,
    )
    assert forced.returncode == 0 and (tmp_path / "out" / "m.gguf").read_bytes() != before
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob("*.old-*"))


def test_a_failed_write_leaves_nothing_and_keeps_the_old_folder(tmp_path, monkeypatch):
    from mygpt.export import hf

    model = make_model(True, True)
    folder = export_hf(model, tmp_path / "hf")
    before = (folder / "model.safetensors").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hf, "save_file", full_disk)
    with pytest.raises(OSError):
        export_hf(make_model(False, False), folder)
    assert (folder / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]

    # The command says so in one line.
    from mygpt.export.__main__ import main

    save_model(model, tmp_path / "model.safetensors")
    with pytest.raises(
        UserError,
        match=r"new: could not be written \(No space left on device\); "
        "nothing written",
    ):
        main([str(tmp_path / "model.safetensors"), "--to", "hf", str(tmp_path / "new")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model.safetensors"]


@pytest.mark.slow
def test_a_gpt2_size_exports_from_the_download_cache(models_dir, tmp_path, monkeypatch, capsys):
    """SOURCE 124M is read from --models-dir as --init-from reads it: complete there (from a
    server named by --base-url, here a closed port), so nothing is fetched."""
    args = (
        "124M",
        "--to",
        "gguf",
        tmp_path / "g.gguf",
        "--models-dir",
        models_dir,
        "--base-url",
        "http://127.0.0.1:9",
    )
    out = run_in_process("mygpt.export", (*args, "--outtype", "f32"), monkeypatch, capsys)
    assert out.returncode == 0, out.stderr
    assert f"Loaded OpenAI's GPT-2 124M ({models_dir / 'gpt2' / '124M'})" in out.stderr
    settings = DownloadSettings(models_dir=models_dir, base_url="http://127.0.0.1:9")
    model = load_model("124M", download=settings)
    stored = {t.name: t for t in gguf.GGUFReader(tmp_path / "g.gguf").tensors}
    assert np.array_equal(stored["token_embd.weight"].data, model.tok_emb.weight.detach().numpy())
    assert "output.weight" not in stored  # GPT-2's head is tied: stored once
