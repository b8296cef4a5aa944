"""llama.cpp's command-line tools, built once per machine from llama-cpp-python's sdist.

The sdist vendors llama.cpp (`vendor/llama.cpp`), so no network beyond the package registry is
needed. The build is native (-DGGML_NATIVE=ON), so its cache folder is keyed by the CPU as well as
the version: a machine of another kind builds its own.

    uv run python bench/llamacpp.py          # build (or find) and print the folder of the tools
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mygpt.io.files import cache_dir

VERSION = "0.3.36"  # llama-cpp-python; its vendored llama.cpp is what the tests run against
TOOLS = (
    "llama-bench",
    "llama-completion",
    "llama-perplexity",
    "llama-batched-bench",
    "llama-server",
    "llama-tokenize",
)


def cpu_key() -> str:
    """A hash of the CPU's model name and flags: a native build runs only where it was made."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    wanted = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:10]


def cpu_flags() -> set[str]:
    """The CPU's feature flags, as /proc/cpuinfo lists them (empty where it has none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))


def no_repack() -> bool:
    """Whether llama.cpp must run without repacking weights on this CPU.

    On Intel CPUs with AMX, a native build repacks Q8_0 weights for AMX tiles, and that path
    crashes (SIGSEGV; SIGILL with -t 1), also on Q8_0 files from llama.cpp's own converter;
    without repacking the same files run and give F32's perplexity. MYGPT_LLAMACPP_NO_REPACK=1
    asks for it on any CPU (the tests use it to cover this path where there is no AMX).
    """
    return os.environ.get("MYGPT_LLAMACPP_NO_REPACK") == "1" or "amx_int8" in cpu_flags()


def repack_args(tool: str, repack: bool | None = None) -> list[str]:
    """The arguments that turn repacking off for `tool` where `repack` is False (by default:
    where no_repack() says so); llama-bench spells it `--repack 0`, the others `--no-repack`."""
    if repack is None:
        repack = not no_repack()
    if repack:
        return []
    return ["--repack", "0"] if tool == "llama-bench" else ["--no-repack"]


def configuration(repack: bool | None = None) -> str:
    """How the tools run here, for a benchmark's table: the version, native build, repacking."""
    off = repack is False or (repack is None and no_repack())
    state = "off" if off else "on"
    return f"llama.cpp of llama-cpp-python {VERSION}, -DGGML_NATIVE=ON, repack {state}"


def build_dir() -> Path:
    return cache_dir() / "llama.cpp" / f"{VERSION}-{cpu_key()}"


def tools_dir() -> Path | None:
    """The folder holding the built tools, or None if they are not built on this machine."""
    bin_dir = build_dir() / "build" / "bin"
    return bin_dir if all((bin_dir / t).is_file() for t in TOOLS) else None


def _pip() -> list[str]:
    if importlib.util.find_spec("pip"):
        return [sys.executable, "-m", "pip"]
    if shutil.which("pip3"):
        return ["pip3"]
    return ["uvx", "pip"]  # uv's own environments have no pip


def _fetch_source(dest: Path) -> Path:
    """Download the sdist and unpack its vendored llama.cpp into dest/llama.cpp."""
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"llama-cpp-python=={VERSION}"
        download = [*_pip(), "download", "--no-deps", "--no-binary", ":all:", "-d", tmp, spec]
        subprocess.run(download, check=True)
        (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as tar:
            prefix = f"{sdist.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            for m in members:
                m.name = m.name.removeprefix(prefix)
            tar.extractall(dest / "llama.cpp", members=members, filter="data")
    return dest / "llama.cpp"


def build(log=print) -> Path:
    """The folder of llama.cpp's tools, building them first if this machine has none cached."""
    found = tools_dir()
    if found:
        return found
    root = build_dir()
    src = root / "llama.cpp"
    if not (src / "CMakeLists.txt").is_file():
        shutil.rmtree(src, ignore_errors=True)
        log(f"fetching llama-cpp-python {VERSION}'s llama.cpp into {root}")
        _fetch_source(root)
    out = root / "build"
    configure = ["cmake", "-S", str(src), "-B", str(out), "-G", "Ninja"]
    configure += ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF"]
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    log(f"building {', '.join(TOOLS)} (several minutes on 2 cores, once per machine)")
    subprocess.run(["ninja", "-C", str(out), *TOOLS], check=True, stdout=subprocess.DEVNULL)
    return out / "bin"


if __name__ == "__main__":
    print(build(log=lambda s: print(s, file=sys.stderr)))
