"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere."""

import os

import pytest

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


@pytest.fixture(scope="session")
def local_tfds(tmp_path_factory):
    """(data_dir, train texts) of a tfds dataset built offline from strings (never downloaded).

    `gptjax_test_texts` has splits train (30 examples) and validation, and features `text` and
    `meta/body` (the same strings).
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    data_dir = tmp_path_factory.mktemp("tfds")
    texts = [f"tfds document {i}: " + "lorem ipsum dolor " * (i % 5 + 1) for i in range(30)]

    def split(values):
        return tf.data.Dataset.from_tensor_slices({"text": values, "meta": {"body": values}})

    features = tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "meta": {"body": tfds.features.Text()}}
    )
    tfds.dataset_builders.store_as_tfds_dataset(
        name="gptjax_test_texts",
        version="1.0.0",
        features=features,
        split_datasets={"train": split(texts), "validation": split(["held out text"])},
        data_dir=str(data_dir),
        disable_shuffling=True,
    )
    return data_dir, texts
