"""A MyGPT model for other tools: transformers (Hugging Face layout), llama.cpp, ollama (GGUF).

uv run python -m mygpt.export SOURCE --to hf OUT_FOLDER
uv run python -m mygpt.export SOURCE --to gguf OUT.gguf [--outtype f32|f16|bf16|q8_0]
"""

from mygpt.export.gguf_file import OUTTYPES, export_gguf
from mygpt.export.hf import export_hf

__all__ = ["OUTTYPES", "export_gguf", "export_hf"]
