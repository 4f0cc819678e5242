"""grain pipelines over the prepared TFDS array_record datasets.

Per process (after sharding) the pipeline is

  train:  source[shard] -> shuffle(seed) -> repeat() -> random_map(decode + augment)
          -> batch(B, drop_remainder=True) -> to_iter_dataset -> [mp_prefetch]
  eval:   source[shard] padded to a multiple of B -> map(decode, no augmentation)
          -> batch(B) -> to_iter_dataset -> [mp_prefetch]

Batching happens on the `MapDataset`, so batch k always holds elements [k*B, (k+1)*B) of the
per-process sequence: the batches are the same with 0, 1 or more workers, and a checkpointed
iterator state (`get_state`/`set_state`, or `grain.checkpoint.CheckpointSave/Restore` through
orbax) resumes on the identical next batch. `MapDataset.shuffle` is a full permutation per epoch,
reseeded each epoch; the augmentation RNG of an element is derived from the seed and the
element's position in the repeated sequence, so it changes from epoch to epoch too.

Sharding: with `grain.sharding.ShardByJaxProcess`, process p of P reads examples p, p+P, ...
Training drops the remainder so every process has floor(N/P) examples; eval reads all of them,
every process padding its shard to ceil(ceil(N/P)/B)*B so that all processes run the same
number of eval steps. Padding repeats the shard's first example with `mask=False`.
"""

from __future__ import annotations

import math

import grain
import numpy as np
from absl import flags


class ShardSource:
    """Random access to `source[indices[i]]`, padded to `length` with a masked copy."""

    def __init__(self, source, indices: np.ndarray, length: int):
        self._source = source
        self._indices = np.asarray(indices, np.int64)
        self._length = int(length)
        if self._length < len(self._indices):
            raise ValueError("length must be >= the number of indices")

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i):
        i = int(i)
        if i < 0 or i >= self._length:
            raise IndexError(i)
        n = len(self._indices)
        if i < n:
            return self._source[int(self._indices[i])], True
        return self._source[int(self._indices[0])], False

    def __repr__(self) -> str:
        return f"ShardSource(n={len(self._indices)}, length={self._length})"


class InMemorySource:
    """All records of a small split, read once (mfeat: ~1 MB), for fast random access."""

    def __init__(self, source):
        self._records = [source[i] for i in range(len(source))]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, i):
        return self._records[int(i)]


class TrainMap(grain.transforms.RandomMap):
    """Decode + augment an element; `mask` True."""

    def __init__(self, transform):
        self.transform = transform

    def random_map(self, element, rng: np.random.Generator):
        record, _ = element
        out = self.transform(record, rng)
        out["mask"] = np.bool_(True)
        return out


class EvalMap(grain.transforms.Map):
    """Decode without augmentation; `mask` False on padding."""

    def __init__(self, transform):
        self.transform = transform

    def map(self, element):
        record, valid = element
        out = self.transform(record, None)
        out["mask"] = np.bool_(valid)
        return out


class FinalizeMap(grain.transforms.Map):
    """Batch-level conversion in the consuming process (see `to_iterator`)."""

    def __init__(self, finalize):
        self.finalize = finalize

    def map(self, batch):
        return self.finalize(batch)


def ensure_absl_flags_parsed() -> None:
    """grain's multiprocessing reads absl flags; parse them if nobody has (tests, scripts)."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def shard_indices(n: int, shard_index: int, shard_count: int, *, drop_remainder: bool):
    idx = np.arange(shard_index, n, shard_count, dtype=np.int64)
    if drop_remainder:
        idx = idx[: n // shard_count]
    return idx


def derive_seeds(seed: int, shard_index: int) -> tuple[int, int]:
    s = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(shard_index)]).generate_state(2)
    return int(s[0]), int(s[1])


def build_dataset(
    source,
    transform,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    shard_options: grain.sharding.ShardOptions,
    shuffle: bool = True,
) -> grain.MapDataset:
    """The per-process `MapDataset` of batches (see the module docstring)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(source)
    p, count = shard_options.shard_index, shard_options.shard_count
    if train:
        idx = shard_indices(n, p, count, drop_remainder=True)
        if len(idx) < batch_size:
            raise ValueError(
                f"Training needs at least batch_size={batch_size} examples per process; this "
                f"process has {len(idx)} ({n} examples over {count} processes)."
            )
        shuffle_seed, aug_seed = derive_seeds(seed, p)
        ds = grain.MapDataset.source(ShardSource(source, idx, len(idx)))
        if shuffle:
            ds = ds.shuffle(seed=shuffle_seed)
        ds = ds.repeat(None)
        ds = ds.random_map(TrainMap(transform), seed=aug_seed)
        return ds.batch(batch_size, drop_remainder=True)
    idx = shard_indices(n, p, count, drop_remainder=False)
    per_process = math.ceil(n / count)
    padded = math.ceil(per_process / batch_size) * batch_size
    ds = grain.MapDataset.source(ShardSource(source, idx, padded))
    ds = ds.map(EvalMap(transform))
    return ds.batch(batch_size, drop_remainder=False)


def to_iterator(
    ds: grain.MapDataset,
    *,
    num_workers: int,
    num_threads: int,
    prefetch_batches: int,
    worker_buffer_size: int = 2,
    finalize=None,
) -> grain.DatasetIterator:
    """`to_iter_dataset` + optional `mp_prefetch` + optional batch-level `finalize`.

    Image transforms emit compact batches (uint8 / uint16 pixels, uint8 masks) from the workers
    and `finalize` turns them into the float32 / int32 arrays of the API in the consuming
    process: a third of the bytes through shared memory, and vectorised over the batch.
    """
    read = grain.ReadOptions(num_threads=max(int(num_threads), 0),
                             prefetch_buffer_size=max(int(prefetch_batches), 1))
    it_ds = ds.to_iter_dataset(read)
    if num_workers and num_workers > 0:
        ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=int(num_workers), per_worker_buffer_size=int(worker_buffer_size)
            )
        )
    if finalize is not None:
        it_ds = it_ds.map(FinalizeMap(finalize))
    return iter(it_ds)


def eval_num_batches(n: int, batch_size: int, shard_count: int) -> int:
    return math.ceil(math.ceil(n / shard_count) / batch_size)

