"""Write a random GPT-2 checkpoint in OpenAI's TensorFlow layout (run as a child process).

    python make_tf_checkpoint.py OUT_DIR N_LAYER N_EMBD N_HEAD N_CTX N_VOCAB SEED

OUT_DIR gets the seven files of an OpenAI release; OUT_DIR.npz gets the same arrays for the
reference forward pass. tensorflow is imported here only, never in the test process.
"""

import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BPE = Path(__file__).resolve().parent.parent / "mygpt" / "assets"


def main(out, n_layer, n_embd, n_head, n_ctx, n_vocab, seed):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    d = n_embd
    shapes = {"wte": [n_vocab, d], "wpe": [n_ctx, d], "ln_f/g": [d], "ln_f/b": [d]}
    for i in range(n_layer):
        h = f"h{i}/"
        shapes |= {
            h + "ln_1/g": [d],
            h + "ln_1/b": [d],
            h + "ln_2/g": [d],
            h + "ln_2/b": [d],
            h + "attn/c_attn/w": [1, d, 3 * d],
            h + "attn/c_attn/b": [3 * d],
            h + "attn/c_proj/w": [1, d, d],
            h + "attn/c_proj/b": [d],
            h + "mlp/c_fc/w": [1, d, 4 * d],
            h + "mlp/c_fc/b": [4 * d],
            h + "mlp/c_proj/w": [1, 4 * d, d],
            h + "mlp/c_proj/b": [d],
        }
    arrays = {}
    for name, shape in shapes.items():
        base = 1.0 if name.endswith("/g") else 0.0  # norms near 1, everything else near 0
        scale = 0.1 if len(shape) == 1 else 0.15
        arrays[name] = (base + scale * rng.standard_normal(shape)).astype(np.float32)

    tf.compat.v1.disable_eager_execution()
    with tf.Graph().as_default():
        variables = {
            name: tf.compat.v1.get_variable("model/" + name, value.shape, tf.float32)
            for name, value in arrays.items()
        }  # values are loaded below, so the .meta graph does not embed them
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for name, variable in variables.items():
                variable.load(arrays[name], sess)
            saver.save(sess, str(out / "model.ckpt"), write_meta_graph=True)
    # Relative paths, as in OpenAI's release, so the folder can be served and moved.
    (out / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n'
    )
    hparams = {
        "n_vocab": n_vocab,
        "n_ctx": n_ctx,
        "n_embd": d,
        "n_head": n_head,
        "n_layer": n_layer,
    }
    (out / "hparams.json").write_text(json.dumps(hparams, indent=2))
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(BPE / name, out / name)
    np.savez(str(out) + ".npz", **arrays)


if __name__ == "__main__":
    out, *numbers = sys.argv[1:]
    main(out, *map(int, numbers))
