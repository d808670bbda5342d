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


def _import_tensorflow():
    """Imports TF with fd 2 captured, then writes back every captured line but the banners.

    They are INFO lines: TF_CPP_MIN_LOG_LEVEL=0 (which `gptjax --verbose` sets) keeps them."""
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
