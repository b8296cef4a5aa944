"""Copy every variable of a TensorFlow checkpoint into a safetensors file of NumPy arrays.

Run as a separate process (`python tf_checkpoint.py CKPT_DIR OUT_FILE`), never imported by
mygpt: in a process that has imported tensorflow, a later `import torch._dynamo` aborts
(LLVM: "inconsistency in registered CommandLine options"). So this file imports no torch and
no mygpt, and the process that runs the model never imports tensorflow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main(ckpt_dir: str, out_file: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter quiet
    import numpy as np
    import tensorflow as tf
    from safetensors.numpy import save_file

    prefix = str(Path(ckpt_dir) / "model.ckpt")  # OpenAI's name; their `checkpoint` file agrees
    arrays = {
        name: np.ascontiguousarray(tf.train.load_variable(prefix, name), dtype=np.float32)
        for name, _ in tf.train.list_variables(prefix)
    }
    save_file(arrays, out_file)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: tf_checkpoint.py CKPT_DIR OUT_FILE")
    main(sys.argv[1], sys.argv[2])
