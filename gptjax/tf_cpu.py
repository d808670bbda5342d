"""TensorFlow, imported so that it never claims accelerator memory JAX needs, and quietly.

gptjax uses TF only on the host (tf.data, tfds, TensorBoard event files). `import gptjax`
alone does not import it: importing TF costs seconds.
"""

import os
import sys
import tempfile

# Before TF loads: silence its INFO lines but keep warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# Start-up banners TF's C++ side writes straight to file descriptor 2 on import, whatever
# TF_CPP_MIN_LOG_LEVEL says (they go through absl's C++ logging before it is initialised).
# They describe TF's own math kernels, which gptjax never runs.
_BANNERS = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


# TF's __init__ eagerly imports this Keras module (for SavedModel registrations gptjax never
# uses); with it Keras, and through Keras matplotlib.pyplot: 1.5-5 s of a process's start on
# 2 cores. TF catches the ImportError a None entry in sys.modules raises.
_EAGER_KERAS = "keras.src.optimizers"


def _import_tensorflow():
    """Imports TF without its eager Keras import (unless Keras is loaded already), with fd 2
    captured, then writes back every captured line but the banners.

    They are INFO lines: TF_CPP_MIN_LOG_LEVEL=0 (which `gptjax --verbose` sets) keeps them."""
    blocked = "keras" not in sys.modules and _EAGER_KERAS not in sys.modules
    if blocked:
        sys.modules[_EAGER_KERAS] = None
    try:
        return _import_quietly()
    finally:
        if blocked:  # `tf.keras` still loads Keras, lazily, when someone asks for it
            sys.modules.pop(_EAGER_KERAS, None)


def _import_quietly():
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not any(b in line for b in _BANNERS)]
            sys.stderr.write("".join(kept))
    return tensorflow


tf = _import_tensorflow()

try:
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):
    # RuntimeError: TF already initialised its devices (someone used TF first); too late to
    # hide them, and tensorflow-cpu sees no GPU anyway.
    pass

__all__ = ["tf"]
