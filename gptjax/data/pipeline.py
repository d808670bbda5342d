"""tf.data input where each batch is a pure function of (seed, step, process_index, process_count).

The token stream (an in-memory array, or memory-mapped shards written by `gptjax prepare`,
see gptjax.data.shards) is cut into rows of L+1 tokens (row r = stream[r*L : r*L+L+1];
consecutive rows share one token so every token is a target exactly once). Global row slot
g = step*global_batch + i reads row index_shuffle(g % num_rows, seed=[seed, epoch, salt]), a
seeded permutation per epoch with no shuffle buffer, so resuming at step k computes batch k
directly: no replay, no iterator state to checkpoint. Each process takes its contiguous slice
of every global batch and reads only those rows from the shards.

Packing (`packing=True`): `segment_ids` step up and `positions` restart at each `<s>`, so
attention stays inside a document. Plain concatenate-and-chunk (`packing=False`): one
segment per row, positions 0..L-1, attention crosses document boundaries (GPT-2, nanoGPT).
Either way a target that is the next document's `<s>`, or padding, has weight 0.

Importing this module imports TensorFlow with every accelerator hidden from it (gptjax.tf_cpu).
"""

from collections.abc import Sequence

import numpy as np

from gptjax.data.conversations import PackedConversations
from gptjax.data.prepare import documents_to_stream
from gptjax.data.shards import ShardedTokens
from gptjax.errors import ConfigError
from gptjax.tf_cpu import tf
from gptjax.tokenizer import Tokenizer

INT64_MAX = np.iinfo(np.int64).max
# Third seed word of the row permutation: keeps this stream of permutations distinct from
# any other index shuffle that reuses the same user seed (e.g. a later SFT mixture).
_SHUFFLE_SALT = 0x67707461  # "gpta"
FIELDS = ("inputs", "targets", "segment_ids", "positions", "weights")


def encode_documents(docs: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """The token stream: `[bos] + ids + [eos]` for each document, concatenated (int32)."""
    encoded = tokenizer.encode_batch(docs)
    return documents_to_stream(encoded, tokenizer.bos_id, tokenizer.eos_id, np.int32)


def pack_row(
    row: np.ndarray, bos_id: int, pad_id: int, packing: bool = True
) -> dict[str, np.ndarray]:
    """Model inputs for one row of L+1 tokens, each field of length L.

    segment_ids start at 1 and step up at every input `bos` (a bos at position 0 stays 1);
    positions restart at 0 at each bos; weights are 0 where the target is bos (the next
    document's start is unpredictable) or pad. Without `packing`: one segment, positions 0..L-1.
    """
    row = np.asarray(row)
    if row.ndim != 1 or row.shape[0] < 2:
        raise ConfigError(f"pack_row needs a 1-D row of at least 2 tokens, got shape {row.shape}")
    inputs, targets = row[:-1].astype(np.int32), row[1:].astype(np.int32)
    is_bos = (inputs == bos_id) & packing
    segment_ids = np.cumsum(is_bos, dtype=np.int32) + np.int32(not is_bos[0])
    index = np.arange(inputs.shape[0], dtype=np.int32)
    starts = np.maximum.accumulate(np.where(is_bos, index, 0))
    weights = ((targets != bos_id) & (targets != pad_id)).astype(np.float32)
    return {
        "inputs": inputs,
        "targets": targets,
        "segment_ids": segment_ids,
        "positions": index - starts,
        "weights": weights,
    }


def _pack_tf(rows: tf.Tensor, bos_id: int, pad_id: int, packing: bool) -> dict[str, tf.Tensor]:
    """`pack_row` on a [B, L+1] batch, vectorised in TF (must match it exactly)."""
    inputs, targets = rows[:, :-1], rows[:, 1:]
    batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]
    is_bos = tf.cast(tf.logical_and(tf.equal(inputs, bos_id), packing), tf.int32)
    segment_ids = tf.cumsum(is_bos, axis=1) + 1 - is_bos[:, :1]
    index = tf.broadcast_to(tf.range(length), tf.shape(inputs))
    # TF has no cumulative max; the start of each segment is the smallest index carrying its
    # id. Ids are made unique per row by offsetting row b by b*(L+1) (segment ids are <= L).
    flat_ids = segment_ids + tf.range(batch)[:, None] * (length + 1)
    starts = tf.math.unsorted_segment_min(index, flat_ids, batch * (length + 1))
    weights = tf.logical_and(tf.not_equal(targets, bos_id), tf.not_equal(targets, pad_id))
    return {
        "inputs": inputs,
        "targets": targets,
        "segment_ids": segment_ids,
        "positions": index - tf.gather(starts, flat_ids),
        "weights": tf.cast(weights, tf.float32),
    }


Tokens = np.ndarray | ShardedTokens


def _local_batch(batch: int, process_index: int, process_count: int) -> int:
    """Rows each process reads of a global batch, after checking the batch splits evenly."""
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


def _check(
    stream: Tokens, seq_len: int, batch: int, process_index: int, process_count: int
) -> tuple[ShardedTokens, int, int]:
    """Validated (stream as ShardedTokens, num_rows, local batch)."""
    if seq_len <= 0:
        raise ConfigError(f"seq_len={seq_len} must be positive")
    local_batch = _local_batch(batch, process_index, process_count)
    if not isinstance(stream, ShardedTokens):
        stream = np.asarray(stream)
        if stream.ndim != 1 or not np.issubdtype(stream.dtype, np.integer):
            raise ConfigError(f"token stream must be a 1-D integer array, got {stream.dtype}")
        stream = ShardedTokens.from_array(stream)
    num_rows = (stream.size - 1) // seq_len
    if num_rows < 1:
        raise ConfigError(
            f"token stream of {stream.size} tokens is shorter than one row of "
            f"seq_len+1={seq_len + 1}; use more text or a shorter seq_len"
        )
    return stream, num_rows, local_batch


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
    stream: Tokens,
    step: int,
    *,
    seq_len: int,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    bos_id: int,
    pad_id: int,
    packing: bool = True,
) -> dict[str, np.ndarray]:
    """The batch `train_dataset` yields at `step`, computed directly in numpy."""
    tokens, num_rows, _ = _check(stream, seq_len, global_batch, process_index, process_count)
    ids = row_ids_for_step(
        step,
        num_rows=num_rows,
        global_batch=global_batch,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    packed = [pack_row(row, bos_id, pad_id, packing) for row in tokens.rows(ids, seq_len)]
    return {k: np.stack([p[k] for p in packed]) for k in FIELDS}


def train_dataset(
    stream: Tokens,
    *,
    seq_len: int,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    bos_id: int,
    pad_id: int,
    packing: bool = True,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Infinite dataset of this process's batches for steps start_step, start_step+1, ...

    Each element is a dict of `[local_batch, seq_len]` arrays: inputs, targets, segment_ids,
    positions (int32) and weights (float32). Starting at step k costs the same as step 0:
    only the rows of the steps produced are read.
    """
    tokens, num_rows, local_batch = _check(
        stream, seq_len, global_batch, process_index, process_count
    )
    if start_step < 0:
        raise ConfigError(f"start_step={start_step} must be >= 0")

    # Plain TF ops already; AutoGraph's conversion would only warn about the closure.
    @tf.autograph.experimental.do_not_convert
    def batch(step: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = _row_ids(
            step,
            num_rows=num_rows,
            global_batch=global_batch,
            local_batch=local_batch,
            seed=seed,
            process_index=process_index,
        )
        # The gather runs in numpy on the (memory-mapped) shards: TF cannot map a file.
        rows = tf.numpy_function(lambda i: tokens.rows(i, seq_len), [ids], tf.int32)
        rows = tf.ensure_shape(rows, [local_batch, seq_len + 1])
        return _pack_tf(rows, bos_id, pad_id, packing)

    dataset = tf.data.Dataset.range(start_step, INT64_MAX)
    # deterministic=True: parallel map may finish out of order, but must yield in step order.
    dataset = dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(prefetch)


def eval_batches(
    stream: Tokens,
    *,
    seq_len: int,
    batch_size: int,
    bos_id: int,
    pad_id: int,
    packing: bool = True,
    max_batches: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Consecutive rows of a validation stream in fixed-shape batches, unshuffled.

    The last batch is filled up with all-pad rows whose weights are 0, so every batch has
    shape [batch_size, seq_len] and one jitted eval step serves them all.
    """
    tokens, num_rows, _ = _check(stream, seq_len, batch_size, 0, 1)
    if max_batches is not None and max_batches <= 0:
        raise ConfigError(f"max_batches={max_batches} must be positive or None (all)")
    num_batches = -(-num_rows // batch_size)
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    pad_row = pack_row(np.full(seq_len + 1, pad_id, np.int32), bos_id, pad_id, packing)
    batches = []
    for b in range(num_batches):
        ids = np.arange(b * batch_size, min((b + 1) * batch_size, num_rows))
        packed = [pack_row(row, bos_id, pad_id, packing) for row in tokens.rows(ids, seq_len)]
        packed += [pad_row] * (batch_size - len(packed))
        batches.append({k: np.stack([p[k] for p in packed]) for k in FIELDS})
    return batches


def _check_packed(
    packed: PackedConversations, batch: int, process_index: int, process_count: int
) -> int:
    """Validated local batch for batches of `packed` rows (the checks `_check` makes)."""
    # Any packed rows: SFT conversations, DPO pairs, pairs with precomputed reference values.
    if not all(hasattr(packed, name) for name in ("fields", "num_rows", "seq_len", "pad_id")):
        raise ConfigError(f"expected packed rows (fields, num_rows), got {type(packed).__name__}")
    return _local_batch(batch, process_index, process_count)


def packed_batch_for_step(
    packed: PackedConversations,
    step: int,
    *,
    global_batch: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> dict[str, np.ndarray]:
    """The batch `packed_train_dataset` yields at `step`, computed directly in numpy."""
    _check_packed(packed, global_batch, process_index, process_count)
    ids = row_ids_for_step(
        step,
        num_rows=packed.num_rows,
        global_batch=global_batch,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    return {k: v[ids] for k, v in packed.fields.items()}


def packed_train_dataset(
    packed: PackedConversations,
    *,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """`train_dataset` for SFT: infinite batches of packed conversation rows.

    Rows are picked by the same seeded per-epoch permutation as pretraining rows, so a batch
    is a pure function of (seed, step, process) and resuming at step k is exact. Fewer rows
    than global_batch is fine: rows repeat, each once per epoch.
    """
    local_batch = _check_packed(packed, global_batch, process_index, process_count)
    if start_step < 0:
        raise ConfigError(f"start_step={start_step} must be >= 0")
    arrays = packed.fields
    dtypes = [tf.as_dtype(v.dtype) for v in arrays.values()]

    @tf.autograph.experimental.do_not_convert
    def batch(step: tf.Tensor) -> dict[str, tf.Tensor]:
        ids = _row_ids(
            step,
            num_rows=packed.num_rows,
            global_batch=global_batch,
            local_batch=local_batch,
            seed=seed,
            process_index=process_index,
        )
        # Gathered in numpy: captured as TF constants, large row arrays would hit the 2 GB
        # graph limit.
        fields = tf.numpy_function(lambda i: [v[i] for v in arrays.values()], [ids], dtypes)
        shape = [local_batch, packed.seq_len]
        return {k: tf.ensure_shape(f, shape) for k, f in zip(arrays, fields, strict=True)}

    dataset = tf.data.Dataset.range(start_step, INT64_MAX)
    dataset = dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(prefetch)


def packed_eval_batches(
    packed: PackedConversations, *, batch_size: int, max_batches: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Consecutive packed rows in fixed-shape batches, unshuffled (validation).

    The last batch is filled up with padding rows (pad ids, segment id 0, weight 0), so
    every batch has shape [batch_size, seq_len] and one jitted eval step serves them all.
    """
    _check_packed(packed, batch_size, 0, 1)
    if max_batches is not None and max_batches <= 0:
        raise ConfigError(f"max_batches={max_batches} must be positive or None (all)")
    num_batches = -(-packed.num_rows // batch_size)
    if max_batches is not None:
        num_batches = min(num_batches, max_batches)
    batches = []
    for b in range(num_batches):
        batch = {}
        for k, v in packed.fields.items():
            rows = v[b * batch_size : (b + 1) * batch_size]
            fill = packed.pad_id if k in ("inputs", "targets") else 0
            padding = np.full((batch_size - rows.shape[0], v.shape[1]), fill, v.dtype)
            batch[k] = np.concatenate([rows, padding])
        batches.append(batch)
    return batches
