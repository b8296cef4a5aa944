"""Device and precision choices shared by both scripts."""

from __future__ import annotations

import ctypes
import hashlib
import platform
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from mygpt.errors import UserError
from mygpt.settings import setting

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
DTYPE_CHOICES = ("float32", "bfloat16", "auto")
DEVICE = "device and precision"  # the group of v1's --help


@dataclass(frozen=True)
class DeviceSettings:
    """Where and in what precision to compute: --device, --dtype, --compile, --tf32."""

    device: str = setting(
        "auto", "auto: cuda, then mps, then cpu", group=DEVICE, choices=DEVICE_CHOICES
    )
    dtype: str = setting(
        "float32",
        "bfloat16: autocast matmuls to bfloat16 (weights stay float32); auto: bfloat16 "
        "where the hardware computes it natively (CUDA with bf16, a CPU with AMX or "
        "AVX512-BF16), else float32",
        group=DEVICE,
        choices=DTYPE_CHOICES,
    )
    compile: bool = setting(False, "torch.compile the model (pays off on long runs)", group=DEVICE)
    tf32: bool = setting(False, "TF32 matmuls for float32 on CUDA", group=DEVICE)


def pick_device(name: str = "auto") -> torch.device:
    """`auto` takes cuda, then mps, then cpu; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps: Apple's MPS backend is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device; use one of {DEVICE_CHOICES}") from None


def cpu_identity() -> tuple[str, frozenset[str]]:
    """The CPU's model name and instruction-set flags (Linux's /proc/cpuinfo; elsewhere the
    platform's processor name and no flags)."""
    cpuinfo = Path("/proc/cpuinfo")
    first_cpu = cpuinfo.read_text().split("\n\n")[0] if cpuinfo.exists() else ""
    fields = dict(ln.split(":", 1) for ln in first_cpu.splitlines() if ":" in ln)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name = fields.get("model name", platform.processor())
    return name, frozenset(fields.get("flags", "").split())


def machine_signature(device: torch.device) -> str:
    """A short hash naming this kind of machine for `device`: the CPU's model name and flags
    (or the GPU's name), torch's version and thread count. Speeds measured on one kind hold
    on the same kind only."""
    if device.type == "cuda":
        what = [torch.cuda.get_device_name(device)]
    else:
        name, flags = cpu_identity()
        what = [name, " ".join(sorted(flags))]
    what += [device.type, torch.__version__, str(torch.get_num_threads())]
    return hashlib.sha256("\n".join(what).encode()).hexdigest()[:10]


def cpu_has_native_bfloat16() -> bool:
    """True on CPUs with AMX or AVX512-BF16 instructions, as PyTorch's cpuinfo reports them."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def has_native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matmuls in hardware (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bfloat16()


def resolve_dtype(device: torch.device, dtype: str) -> str:
    """--dtype auto: bfloat16 where the device computes it natively, float32 elsewhere."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if has_native_bfloat16(device) else "float32"


def make_autocast(
    device: torch.device, dtype: str = "float32"
) -> Callable[[], AbstractContextManager]:
    """A function opening a context that runs matmuls in `dtype` (weights and optimizer stay
    float32); "auto" as `resolve_dtype` decides."""
    dtype = resolve_dtype(device, dtype)
    if dtype == "float32":
        return nullcontext
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--dtype bfloat16: this GPU does not support it")
    return partial(torch.autocast, device_type=device.type, dtype=getattr(torch, dtype))


def allow_tf32(enabled: bool) -> None:
    """TF32 matmuls on Ampere+ GPUs: ~10-bit mantissas, several times the float32 speed."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the RuntimeError of MPS or of the CPU allocator."""
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or any(
        words in text for words in ("out of memory", "can't allocate memory")
    )


def return_freed_memory() -> None:
    """Give blocks of 1 MiB and more back to the OS as soon as they are freed (glibc only).

    glibc serves blocks below a threshold that grows to 32 MiB from its heap, where freed
    activations and widened bfloat16 weights leave holes it cannot return: a LoRA step of
    GPT-2 1558M at context 1024 then held 11 GB instead of 5. LoRA and activation
    checkpointing, which are for memory, ask for this; it costs a page fault per fresh block.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and others: their own allocators
        return
    m_mmap_threshold = -3  # glibc's mallopt parameter (malloc.h); fixing it stops the growth
    libc.mallopt(m_mmap_threshold, 1 << 20)
