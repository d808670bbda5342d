"""TensorFlow, imported so that it never claims accelerator memory JAX needs.

gptjax uses TF only on the host (tf.data, tfds, TensorBoard event files). `import gptjax`
alone does not import it: importing TF costs seconds.
"""

import os

# Before TF loads: silence its INFO lines (CPU feature banners) but keep warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
import tensorflow as tf  # noqa: E402

try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
    # RuntimeError: TF already initialised its devices (someone used TF first); too late to
    # hide them, and tensorflow-cpu sees no GPU anyway.
    pass

__all__ = ["tf"]
