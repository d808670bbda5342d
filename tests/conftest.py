"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""

import os

# --xla_backend_optimization_level=0: the tests check behaviour, not speed, and XLA:CPU
# compiles a sharded train step ~1.5-3x faster without its LLVM optimisations (same losses).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Keep TensorFlow quiet and away from any accelerator during tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
