"""Text of one field of a TensorFlow Datasets split, read from a local `data_dir`, never downloaded.

Any dataset prepared under `data_dir` is found by name, registered with tfds or not (a
dataset written by `tfds.dataset_builders.store_as_tfds_dataset` or `tfds build` elsewhere
and copied over). gptjax never asks tfds to download: a dataset that is not prepared locally
is a DataError saying how to prepare it.
"""

from __future__ import annotations

from collections.abc import Iterator

from gptjax.errors import DataError
from gptjax.tf_cpu import tf  # TF with accelerators hidden, before tfds loads it


def tfds_builder(name: str, data_dir: str | None):
    """The builder of a dataset prepared under `data_dir`; DataError if there is none."""
    import tensorflow_datasets as tfds

    where = data_dir or "the default data_dir (~/tensorflow_datasets)"
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise DataError(
            f"no tfds dataset {name!r} in {where}; check the name, or add data_dir=DIR to the "
            "source"
        ) from None
    if not builder.is_prepared():
        raise DataError(
            f"tfds dataset {name!r} is not prepared in {where}; gptjax never downloads: run "
            f"`tfds build {name} --data_dir DIR` where the internet is reachable and copy DIR "
            "here, then add data_dir=DIR to the source"
        )
    return builder


def _field(example: dict, field: str, name: str):
    value = example
    for key in field.split("/"):
        if not isinstance(value, dict) or key not in value:
            found = ", ".join(sorted(value)) if isinstance(value, dict) else "none"
            raise DataError(
                f"tfds dataset {name!r} has no feature {field!r} (found: {found}); pass "
                "field=NAME in the source (nested features as a/b)"
            )
        value = value[key]
    if not isinstance(value, bytes | str):
        raise DataError(f"tfds dataset {name!r}: feature {field!r} is not text ({type(value)})")
    return value


def tfds_texts(name: str, split: str, field: str, data_dir: str | None) -> Iterator[bytes | str]:
    """The `field` of every example of `split`, in the dataset's stored order."""
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=False)
    except (ValueError, KeyError) as e:
        splits = ", ".join(builder.info.splits.keys())
        raise DataError(
            f"tfds dataset {name!r} has no split {split!r} ({e}); splits: {splits}"
        ) from None
    try:
        for example in tfds.as_numpy(dataset):
            yield _field(example, field, name)
    except tf.errors.OpError as e:
        raise DataError(
            f"tfds dataset {name!r} in {builder.data_dir} is damaged ({e.message}); rebuild it"
        ) from None
