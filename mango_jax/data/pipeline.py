"""grain pipelines over the prepared TFDS array_record datasets.

Training reads one global sequence whatever the number of processes: the concatenation of
per-epoch permutations of the split (grain's `index_shuffle`, reseeded each epoch from the data
seed, as `MapDataset.shuffle` does), cut into global batches of `batch_size × process_count`
examples. Process p of P takes the contiguous slice [p·B, (p+1)·B) of every global batch and
`jax.make_array_from_process_local_data` places it on the process's devices, so every global
batch holds the same examples whatever the topology: one process with 8 devices and two with 4
assemble identical global arrays (in the same rows wherever each process's devices are
contiguous along the mesh's batch axis, as on CPU and GPU hosts). The augmentation RNG of an
example is seeded by (seed, epoch, example index) and so ignores the topology too.

  train:  TrainSequence(source; this process's slots) -> map(decode + augment)
          -> batch(B, drop_remainder=True) -> [from global batch k] -> to_iter_dataset
          -> [mp_prefetch], wrapped in a `TrainIterator`
  eval:   source[shard] padded to a multiple of B -> map(decode, no augmentation)
          -> batch(B) -> to_iter_dataset -> [mp_prefetch]

Batching happens on the `MapDataset`, so batch k always holds the same elements: the batches are
the same with 0, 1 or more workers. A `TrainIterator`'s state is the number of global batches
read (and the global batch size), identical in every process: restoring it resumes on the
identical next global batch, also on a different number of processes.

Eval sharding: with `grain.sharding.ShardByJaxProcess`, process p of P reads examples p, p+P, ...
of the split in order, every process padding its shard to ceil(ceil(N/P)/B)*B so that all
processes run the same number of eval steps. Padding repeats the shard's first example with
`mask=False`; every example is read exactly once.
"""

from __future__ import annotations

import math
import sys

import grain
import numpy as np
from absl import flags


class TrainSequence:
    """Process `shard_index`'s elements of the endless global training sequence.

    Element i is the example in global slot (i // B) · B · P + p · B + i % B, returned as
    `(record, epoch, example_index)` so that augmentation can seed from the example.
    """

    def __init__(self, source, *, batch_size: int, shard_index: int, shard_count: int,
                 seed: int, shuffle: bool):
        self._source = source
        self._n = len(source)
        self._batch_size, self._shard_index = int(batch_size), int(shard_index)
        self._shard_count = int(shard_count)
        self._seed, self._shuffle = int(seed), bool(shuffle)

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, i):
        batch, row = divmod(int(i), self._batch_size)
        slot = (batch * self._shard_count + self._shard_index) * self._batch_size + row
        epoch, position = divmod(slot, self._n)
        example = position
        if self._shuffle and self._n > 1:
            example = grain.experimental.index_shuffle(
                position, max_index=self._n - 1, seed=(self._seed + epoch) % 2 ** 32, rounds=4)
        return self._source[int(example)], epoch, int(example)

    def __repr__(self) -> str:
        return (f"TrainSequence(n={self._n}, batch_size={self._batch_size}, "
                f"shard={self._shard_index}/{self._shard_count})")


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


class TrainMap(grain.transforms.Map):
    """Decode + augment an element of a `TrainSequence`; `mask` True."""

    def __init__(self, transform, seed: int):
        self.transform, self.seed = transform, int(seed)

    def map(self, element):
        record, epoch, example = element
        out = self.transform(record, np.random.default_rng([self.seed, epoch, example]))
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


class TrainIterator(grain.DatasetIterator):
    """This process's training batches; its state counts global batches, not local elements.

    The state is the same in every process and for every process count, which is what lets a
    job resume on a different number of hosts (`set_state` of any process's saved state).
    """

    def __init__(self, batches: grain.MapDataset, *, global_batch_size: int, open_iterator):
        super().__init__()
        self._batches, self._global_batch_size = batches, int(global_batch_size)
        self._open = open_iterator
        self._next_batch = 0
        self._iterator = None

    def _ensure_open(self):
        if self._closed:
            raise ValueError("this TrainIterator is closed; make a new one")
        if self._iterator is None:
            self._iterator = self._open(self._batches[self._next_batch:])
        return self._iterator

    def __next__(self):
        batch = next(self._ensure_open())
        self._next_batch += 1
        return batch

    def start_prefetch(self) -> None:
        self._ensure_open().start_prefetch()

    def get_state(self) -> dict:
        return {"global_batches_read": self._next_batch,
                "global_batch_size": self._global_batch_size}

    def set_state(self, state: dict) -> None:
        if "global_batches_read" not in state:
            raise ValueError(f"not a TrainIterator state: {state}. Checkpoints written before "
                             "training data became topology-independent cannot resume their "
                             "data position; start the run afresh in a new workdir.")
        if int(state["global_batch_size"]) != self._global_batch_size:
            raise ValueError(
                f"the checkpoint read global batches of {state['global_batch_size']} examples; "
                f"this job reads {self._global_batch_size} (batch_size × processes). Resume "
                "with the same global batch_size.")
        self._release()
        self._next_batch = int(state["global_batches_read"])

    def _release(self) -> None:
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None

    def close(self) -> None:
        self._release()
        self._closed = True


def ensure_absl_flags_parsed() -> None:
    """grain's multiprocessing reads absl flags; parse them if nobody has (tests, scripts)."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def shard_indices(n: int, shard_index: int, shard_count: int):
    return np.arange(shard_index, n, shard_count, dtype=np.int64)


def derive_seeds(seed: int) -> tuple[int, int]:
    """Independent shuffle and augmentation seeds from the data seed."""
    s = np.random.SeedSequence(int(seed) & 0xFFFFFFFF).generate_state(2)
    return int(s[0]), int(s[1])


def train_batches(source, transform, *, batch_size: int, seed: int,
                  shard_options: grain.sharding.ShardOptions,
                  shuffle: bool = True) -> grain.MapDataset:
    """This process's endless `MapDataset` of training batches (see the module docstring)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n, count = len(source), shard_options.shard_count
    if n < batch_size * count:
        raise ValueError(
            f"Training needs at least one global batch of examples: batch_size={batch_size} × "
            f"{count} process(es) = {batch_size * count}, but the split has {n}. Lower "
            "batch_size.")
    shuffle_seed, aug_seed = derive_seeds(seed)
    sequence = TrainSequence(source, batch_size=batch_size, shard_index=shard_options.shard_index,
                             shard_count=count, seed=shuffle_seed, shuffle=shuffle)
    ds = grain.MapDataset.source(sequence).map(TrainMap(transform, aug_seed))
    return ds.batch(batch_size, drop_remainder=True)


def eval_batches(source, transform, *, batch_size: int,
                 shard_options: grain.sharding.ShardOptions) -> grain.MapDataset:
    """This process's shard of one in-order pass, padded (see the module docstring)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n, p, count = len(source), shard_options.shard_index, shard_options.shard_count
    padded = eval_num_batches(n, batch_size, count) * batch_size
    ds = grain.MapDataset.source(ShardSource(source, shard_indices(n, p, count), padded))
    return ds.map(EvalMap(transform)).batch(batch_size, drop_remainder=False)


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
