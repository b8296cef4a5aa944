"""Nothing lost when the output folder, the disk or memory fail: one line, files as promised.

The v1 script runs in this process (runpy) so that a full disk, an out-of-memory error and a
damaged file can be simulated by monkeypatching.
"""

import errno
import shlex

import pytest
import torch
from conftest import ROOT, run_in_process
from http_server import FileServer

import mygpt.io.gpt2.download as download
import mygpt.training.preflight as preflight
from mygpt import DownloadError, download_gpt2, load_checkpoint
from mygpt.training.trainer import Trainer

SCRIPT = ROOT / "MyGPT_v1_local-train.py"
TINY = shlex.split(
    "--emb-dim 32 --n-layers 1 --n-heads 2 --context-length 64 --batch-size 4 "
    "--eval-freq 2 --eval-iter 1 --sample-tokens 3"
)
ENOSPC = OSError(errno.ENOSPC, "No space left on device")
pytestmark = pytest.mark.slow  # runs the v1 script


def v1(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run the v1 script in this process: (exit code, stdout, stderr)."""
    out = run_in_process(SCRIPT, args, monkeypatch, capsys)
    return out.returncode, out.stdout, out.stderr


def files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_output_folder_under_a_file_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    (tmp_path / "story.txt").write_text("text")
    code, out, err = v1(monkeypatch, capsys, *TINY, "--output-dir", tmp_path / "story.txt" / "out")
    assert code == 2 and out == ""
    assert (
        err == f"error: --output-dir {tmp_path}/story.txt/out: cannot write there "
        "(Not a directory)\n"
    )
    code, out, err = v1(monkeypatch, capsys, *TINY, "--output-dir", tmp_path / "story.txt")
    assert (code, out) == (2, "")
    assert err == f"error: --output-dir {tmp_path}/story.txt: exists and is not a directory\n"


def test_too_little_disk_or_memory_is_refused_before_any_work(monkeypatch, capsys, tmp_path):
    usage = preflight.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda p: usage._replace(free=10**6))
    code, out, err = v1(
        monkeypatch, capsys, *TINY, "--output-dir", tmp_path / "o", "--save-every", "5"
    )
    assert code == 2 and out == ""
    assert (
        err == f"error: --output-dir {tmp_path / 'o'}: 0.00 GB free, the run writes 0.09 GB "
        "(model, checkpoints)\n"
    )
    monkeypatch.undo()

    # A model far too big for this machine: refused before a byte of it is allocated.
    code, out, err = v1(monkeypatch, capsys, "--emb-dim", "12000", "--output-dir", tmp_path / "o")
    assert code == 2 and out == ""
    assert err.startswith("error: the run needs about 35") and err.count("\n") == 1
    assert (
        "GB is free: use a smaller model or --batch-size (with --grad-accum for the same "
        "batch), or --no-memory-check if you know better" in err
    )

    # --no-memory-check trusts the user.
    monkeypatch.setattr(preflight, "available_memory", lambda device: 10**6)
    code, _, err = v1(monkeypatch, capsys, *TINY, "--max-steps", "1", "--output-dir", tmp_path)
    assert code == 2 and "the run needs about 1.0 GB of memory on cpu, 0.0 GB is free" in err
    code, _, err = v1(
        monkeypatch,
        capsys,
        *TINY,
        "--max-steps",
        "1",
        "--output-dir",
        tmp_path,
        "--no-memory-check",
    )
    assert code == 0, err
    assert (tmp_path / "model.safetensors").is_file()


def test_a_full_disk_keeps_the_last_good_checkpoint(monkeypatch, capsys, tmp_path):
    """Periodic checkpoints: the second fails (a warning, training goes on); at the end the
    weights are saved, the final checkpoint fails: exit 1, the step-2 checkpoint is intact."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"half a checkpoint")  # save_checkpoint hands torch.save an open file
        raise ENOSPC

    monkeypatch.setattr(torch, "save", save)
    code, out, err = v1(
        monkeypatch,
        capsys,
        *TINY,
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--output-dir",
        tmp_path,
    )
    checkpoint = tmp_path / "checkpoint.pt"
    assert code == 1
    warning = (
        f"warning: could not write {checkpoint} (No space left on device): a periodic "
        f"checkpoint not saved; the last checkpoint, {checkpoint}, is from step 2; "
        "training goes on"
    )
    assert err.splitlines()[0] == warning
    assert err.splitlines()[-1] == (
        f"error: could not write {checkpoint} (No space left on device): the final checkpoint "
        f"not saved; the last checkpoint, {checkpoint}, is from step 2"
    )
    assert "Traceback" not in err and len(calls) == 3
    assert out.splitlines()[-1] == f"Model weights saved to: {tmp_path / 'model.safetensors'}"
    assert files(tmp_path) == ["checkpoint.pt", "loss-plot.png", "model.safetensors"]
    monkeypatch.undo()
    assert load_checkpoint(checkpoint)["state"]["step"] == 2


def test_weights_that_cannot_be_written_are_reported(monkeypatch, capsys, tmp_path):
    import mygpt.io.model_files

    def full(state, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise ENOSPC

    monkeypatch.setattr(mygpt.io.model_files, "save_file", full)
    code, out, err = v1(monkeypatch, capsys, *TINY, "--max-steps", "2", "--output-dir", tmp_path)
    weights = tmp_path / "model.safetensors"
    assert code == 1 and "Traceback" not in err
    assert err == (
        f"error: could not write {weights} (No space left on device): the trained weights not "
        "saved; this run wrote no checkpoint (--save-every N writes them)\n"
    )
    assert files(tmp_path) == []  # no partial file, and the plot waits for the weights


def test_out_of_memory_in_training_suggests_a_smaller_batch(monkeypatch, capsys, tmp_path):
    real_step = Trainer._train_step

    def step(self):
        if self.state.step == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_step(self)

    monkeypatch.setattr(Trainer, "_train_step", step)
    code, _, err = v1(
        monkeypatch,
        capsys,
        *TINY,
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--output-dir",
        tmp_path,
    )
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        "error: out of memory on cpu at --batch-size 4: try --batch-size 2 --grad-accum 2 (the "
        f"same batch per step); the last checkpoint, {tmp_path / 'checkpoint.pt'}, is from step 2"
    )
    assert files(tmp_path) == ["checkpoint.pt"]


@pytest.mark.parametrize("flag", ["--resume", "--init-from"])
def test_damaged_files_are_named_in_one_line(monkeypatch, capsys, tmp_path, flag):
    v1(
        monkeypatch,
        capsys,
        *TINY,
        "--max-steps",
        "2",
        "--save-every",
        "2",
        "--output-dir",
        tmp_path,
    )
    for name in ("checkpoint.pt", "model.safetensors"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(data[: len(data) // 2])
        garbled = bytearray(data)
        garbled[200:260] = b"x" * 60
        (tmp_path / f"garbled-{name}").write_bytes(bytes(garbled))
    cases = ["cut-checkpoint.pt", "garbled-checkpoint.pt"]
    if flag == "--init-from":
        cases += ["cut-model.safetensors", "garbled-model.safetensors"]
    for name in cases:
        code, out, err = v1(monkeypatch, capsys, flag, tmp_path / name, "--output-dir", tmp_path)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"error: {tmp_path / name}: damaged or not ")
        assert "weights_only" not in err


def test_a_full_disk_while_downloading_keeps_the_part_file(tf_checkpoint, tmp_path, monkeypatch):
    folder, _ = tf_checkpoint
    data_name = "model.ckpt.data-00000-of-00001"
    real_open = open

    class FillsUp:
        """A file that takes 1 MB, then reports a full disk."""

        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, chunk):
            if self.written >= 2**20:
                raise ENOSPC
            self.written += len(chunk)
            return self.f.write(chunk)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FillsUp(f) if str(path).endswith(data_name + ".part") else f

    monkeypatch.setattr(download, "open", fake_open, raising=False)
    monkeypatch.setattr(download, "CHUNK", 2**19)
    with FileServer(folder.parent) as server:
        with pytest.raises(DownloadError) as e:
            download_gpt2("124M", tmp_path, base_url=server.url)
        part = tmp_path / "gpt2" / "124M" / (data_name + ".part")
        assert str(e.value) == (
            f"could not write {part} (No space left on device): 1,048,576 bytes are kept there; "
            "make room and run again to resume the download"
        )
        assert part.stat().st_size == 2**20
        monkeypatch.undo()
        download_gpt2("124M", tmp_path, base_url=server.url)  # resumes from the kept bytes
        requests = [r for r in server.faults.requests if r[0].endswith(data_name)]
    assert requests[-1][1] == f"bytes={2**20}-"
    assert (tmp_path / "gpt2" / "124M" / data_name).read_bytes() == (
        folder / data_name
    ).read_bytes()
