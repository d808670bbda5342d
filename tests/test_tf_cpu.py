"""gptjax's TensorFlow import (gptjax.tf_cpu) leaves out the Keras import TF makes eagerly:
seconds of every training process's start, for a module gptjax never uses."""

import subprocess
import sys

SCRIPT = """
import sys
from gptjax.tf_cpu import tf
assert "keras" not in sys.modules, sorted(m for m in sys.modules if m.startswith("keras"))
assert "keras.src.optimizers" not in sys.modules  # the block is lifted after the import
assert list(tf.data.Dataset.range(3).as_numpy_iterator()) == [0, 1, 2]
print("ok")
"""


def test_tensorflow_is_imported_without_keras():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
