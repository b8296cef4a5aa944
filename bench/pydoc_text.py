"""Write real English text that every Python ships: the documentation topics of pydoc_data.

uv run python bench/pydoc_text.py OUT.txt     # about 465 KB, topics in sorted order
"""

from __future__ import annotations

import sys
from pathlib import Path
from pydoc_data.topics import topics


def pydoc_text() -> str:
    return "\n\n".join(topics[name] for name in sorted(topics))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip())
    Path(sys.argv[1]).write_text(pydoc_text())
