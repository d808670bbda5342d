"""tf.data input where each batch is a pure function of (seed, step, process_index, process_count).

Batches are made of `Rows` (gptjax.data.rows): a token stream cut into packed rows for
pretraining, packed conversations for SFT, packed preference pairs for DPO; this module
never looks inside a row. Global row slot g = step*global_batch + i reads row
index_shuffle(g % num_rows, seed=[seed, epoch, salt]), a seeded permutation per epoch with no
shuffle buffer, so resuming at step k computes batch k directly: no replay, no iterator state
to checkpoint. Fewer rows than global_batch is fine: rows repeat, each once per epoch. Each
process takes its contiguous slice of every global batch and reads only those rows.

Importing this module imports TensorFlow with every accelerator hidden from it (gptjax.tf_cpu).
"""

import atexit
import threading
import time

import numpy as np

from gptjax.data.rows import Rows
from gptjax.errors import ConfigError
from gptjax.tf_cpu import tf

INT64_MAX = np.iinfo(np.int64).max
# Third seed word of the row permutation: keeps this stream of permutations distinct from
# any other index shuffle that reuses the same user seed (e.g. a later SFT mixture).
_SHUFFLE_SALT = 0x67707461  # "gpta"
# At exit: how long the pipeline's calls into Python must have been idle, and the most to wait.
_IDLE_SEC, _EXIT_WAIT_SEC = 0.1, 5.0


class _Reads:
    """The pipeline's calls into Python (`rows.take` on tf.data's threads), waited out at exit.

    A dataset iterator still alive when the interpreter shuts down (a module-level variable in a
    script) waits in its destructor for the calls in flight, and a call that then asks for the
    GIL never gets it: the process hangs at exit (tensorflow#21277). Nothing pulls batches at
    exit, so the pipeline stops by itself once its buffers are full; the exit handler waits for
    that (no call for _IDLE_SEC) before Python tears the modules down.
    """

    def __init__(self) -> None:
        self.lock, self.in_flight, self.last_end = threading.Lock(), 0, 0.0

    def take(self, rows: Rows, ids: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.in_flight += 1
        try:
            return list(rows.take(ids).values())
        finally:
            with self.lock:
                self.in_flight -= 1
                self.last_end = time.monotonic()

    def wait_idle(self) -> None:
        deadline = time.monotonic() + _EXIT_WAIT_SEC
        while time.monotonic() < deadline:
            with self.lock:
                if not self.in_flight and time.monotonic() - self.last_end > _IDLE_SEC:
                    return
            time.sleep(0.01)


_reads = _Reads()
atexit.register(_reads.wait_idle)


def _check(rows: Rows, batch: int, process_index: int, process_count: int) -> int:
    """Rows each process reads of a global batch, after checking the batch splits evenly."""
    if not isinstance(rows, Rows):
        raise ConfigError(
            f"expected Rows (a token stream or packed rows, gptjax.data.rows), "
            f"got {type(rows).__name__}"
        )
    if batch <= 0:
        raise ConfigError(f"batch size {batch} must be positive")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ConfigError(
            f"process_index={process_index} must be in [0, process_count={process_count})"
        )
    if batch % process_count:
        raise ConfigError(
            f"global_batch={batch} must be divisible by process_count={process_count}; "
            f"use a multiple of {process_count}"
        )
    return batch // process_count


def _row_ids(
    step: tf.Tensor,
    *,
    num_rows: int,
    global_batch: int,
    local_batch: int,
    seed: int,
    process_index: int,
) -> tf.Tensor:
    """Row indices [local_batch] (int64) of this process's slice of global batch `step`."""
    slots = (
        tf.cast(step, tf.int64) * global_batch
        + process_index * local_batch
        + tf.range(local_batch, dtype=tf.int64)
    )
    epoch = slots // num_rows
    seeds = tf.stack(
        [
            tf.fill([local_batch], tf.constant(seed, tf.int64)),
            epoch,
            tf.fill([local_batch], tf.constant(_SHUFFLE_SALT, tf.int64)),
        ],
        axis=1,
    )
    max_index = tf.fill([local_batch], tf.constant(num_rows - 1, tf.int64))
    # The raw op, not tf.random.experimental.index_shuffle: in TF 2.21 that wrapper pads a
    # [n, 2] seed along the wrong axis and fails on any per-element seed. Same algorithm.
    return tf.raw_ops.RandomIndexShuffle(
        index=slots % num_rows, seed=seeds, max_index=max_index, rounds=4
    )


def row_ids_for_step(
    step: int,
    *,
    num_rows: int,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> np.ndarray:
    """Which rows (int64 [local_batch]) process `process_index` reads at `step`."""
    local_batch = global_batch // process_count
    ids = _row_ids(
        tf.constant(step, tf.int64),
        num_rows=num_rows,
        global_batch=global_batch,
        local_batch=local_batch,
        seed=seed,
        process_index=process_index,
    )
    return ids.numpy()


def batch_for_step(
    rows: Rows,
    step: int,
    *,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """The batch `train_dataset` yields at `step`, computed directly in numpy."""
    _check(rows, global_batch, process_index, process_count)
    ids = row_ids_for_step(
        step,
        num_rows=rows.num_rows,
        global_batch=global_batch,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    return rows.take(ids)


def train_dataset(
    rows: Rows,
    *,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Infinite dataset of this process's batches for steps start_step, start_step+1, ...

    Each element is `{field: [local_batch, seq_len]}` for the fields of `rows`. Starting at
    step k costs the same as step 0: only the rows of the steps produced are read.
    """
    local_batch = _check(rows, global_batch, process_index, process_count)
    if start_step < 0:
        raise ConfigError(f"start_step={start_step} must be >= 0")
    names, dtypes = list(rows.fields), [tf.as_dtype(d) for d in rows.fields.values()]
    shape = [local_batch, rows.seq_len]

    # Plain TF ops already; AutoGraph's conversion would only warn about the closure.
    @tf.autograph.experimental.do_not_convert
    def batch(step: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = _row_ids(
            step,
            num_rows=rows.num_rows,
            global_batch=global_batch,
            local_batch=local_batch,
            seed=seed,
            process_index=process_index,
        )
        # Rows are read in numpy: TF cannot map a shard file, and large in-memory rows captured
        # as TF constants would hit the 2 GB graph limit. numpy's loops release the GIL, so
        # the parallel map still packs several batches at once.
        fields = tf.numpy_function(lambda i: _reads.take(rows, i), [ids], dtypes)
        return {k: tf.ensure_shape(f, shape) for k, f in zip(names, fields, strict=True)}

    dataset = tf.data.Dataset.range(start_step, INT64_MAX)
    # deterministic=True: parallel map may finish out of order, but must yield in step order.
    dataset = dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(prefetch)


def eval_batches(
    rows: Rows, *, batch_size: int, max_batches: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Consecutive rows in fixed-shape batches, unshuffled (validation).

    The last batch is filled up with `rows.padding` (weight 0), so every batch has shape
    [batch_size, seq_len] and one jitted eval step serves them all.
    """
    _check(rows, batch_size, 0, 1)
    if max_batches is not None and max_batches <= 0:
        raise ConfigError(f"max_batches={max_batches} must be positive or None (all)")
    num_batches = -(-rows.num_rows // batch_size)
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    batches = []
    for b in range(num_batches):
        batch = rows.take(np.arange(b * batch_size, min((b + 1) * batch_size, rows.num_rows)))
        short = batch_size - len(next(iter(batch.values())))
        if short:
            fill = rows.padding(short)
            batch = {k: np.concatenate([v, fill[k]]) for k, v in batch.items()}
        batches.append(batch)
    return batches
