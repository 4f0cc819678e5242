"""The data layer: TFDS array_record builders and grain pipelines for five datasets and yours.

Datasets: `mfeat` (UCI Multiple Features, embedded, prepares itself), `mmimdb`, `nyudv2`,
`sunrgbd`, `taskonomy` (prepared from files the user has: see `data/README.md` and
`python -m mango_jax.data.prepare --help`), and `paired`: any two modalities listed in a
manifest you write (`mango_jax.data.paired`). The training loop uses exactly this API:

  cfg = default_config('nyudv2')          # an ml_collections.ConfigDict, fields below
  ensure_prepared(cfg)                    # prepares mfeat; clear DataNotFoundError otherwise
  info = dataset_info(cfg)                # DatasetInfo: task, shapes, classes, split sizes
  it = make_iterator(cfg, 'train', batch_size=32, train=True, seed=0)
  batch = next(it)                        # {modality: ..., 'label': ..., 'mask': bool [B]}

Iterator states save and restore with `it.get_state()` / `it.set_state(state)`, or together
with the model through orbax: `grain.checkpoint.CheckpointSave(it)` /
`grain.checkpoint.CheckpointRestore(it)`. A training iterator's state counts global batches and is
the same in every process, so it also restores on a different number of processes.
Iterators with worker processes (`num_workers > 0`) hold shared memory: call `it.close()` when
done with one (for example after each eval pass).
"""

from __future__ import annotations

import os
import threading

import grain
import ml_collections

from mango_jax.data import pipeline
from mango_jax.data.core import DataFormatError, DataNotFoundError, DatasetInfo
from mango_jax.data.spec import DATASETS, get_spec

__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "DatasetInfo",
    "dataset_info",
    "default_config",
    "ensure_prepared",
    "make_iterator",
    "num_examples",
]


def default_config(name: str) -> ml_collections.ConfigDict:
    """The data config of dataset `name`, with every field set to its default.

    Fields of every dataset:
      name: the dataset, one of 'mfeat', 'mmimdb', 'nyudv2', 'sunrgbd', 'taskonomy', 'paired'.
      data_dir: the dataset root (default 'data'); the prepared dataset lives in
        `<data_dir>/<name>/[<form>/]<version>/`.
      modalities: the two input modalities, in the order the model takes them.
      num_workers: grain worker processes (`mp_prefetch`); 0 reads in the calling process.
        Default 0 for mfeat (in-memory vectors), 2 for the image datasets.
      num_threads: reading/decoding threads per process (grain `ReadOptions.num_threads`;
        default 4, 1 for mfeat, whose splits are held in memory).
      prefetch_batches: batches read ahead per process (grain `ReadOptions.prefetch_buffer_size`;
        the pipeline batches before `to_iter_dataset`, so the unit is a batch).
      seed: the data seed; the training loop passes it to `make_iterator(seed=...)` (it drives the
        global per-epoch shuffle and the per-example augmentation RNG, the same in every
        process, so the data order does not depend on the number of processes).
      shuffle: whether training shuffles (grain's `MapDataset.shuffle` is a full permutation,
        reseeded every epoch, so there is no shuffle buffer to size).

    mfeat (UCI Multiple Features; 1,200 / 400 / 400 stratified split):
      modalities: any two of 'fou' (76), 'fac' (216), 'kar' (64), 'pix' (240), 'zer' (47),
        'mor' (6); default ('pix', 'fou').
      standardize: subtract the train split's per-feature mean, divide by its std (default True).

    mmimdb (23-genre multi-label; poster + plot):
      form: 'multibench' (default; prepared from `multimodal_imdb.hdf5`) or 'original' (prepared
        from the `mmimdb/` release). Each form is prepared into its own folder.
      tokenizer: 'words' (default: the HDF5's own ids, or the original form's word vocabulary)
        or 'clip' (original form only: CLIP's BPE ids, prepared with `--tokenizer=CLIP_FOLDER`
        into their own folder).
      modalities: default ('image', 'text'). 'image': float32 (H, W, 3) poster, normalised with
        rgb_mean / rgb_std (ImageNet's by default); 'text': int32 (max_text_len,) token ids
        (padding: 0, or CLIP's end token), with 'text_mask' bool (max_text_len,), True on real
        tokens (CLIP's start and end tokens included). The multibench form also offers
        'word2vec' (300,) and 'vgg' (4096,) float32 feature vectors.
      image_size: (H, W) of the poster (default (256, 160), the MultiBench size).
      max_text_len: token ids are truncated / padded to this length (default 256; CLIP ids: at
        most the tokenizer's 77, truncation keeps the end token last).
      augment: random horizontal flip of the poster in training (default False).

    nyudv2 (40 classes) and sunrgbd (37 classes), RGB-D semantic segmentation:
      modalities: ('rgb', 'depth').
      image_size: side of the square training crop and of the eval input (default 256).
      scale_range: training random scale range (default (0.5, 2.0)), applied after squashing the
        image to image_size x image_size; then a random image_size crop (rgb padded with the
        ImageNet mean, depth with 0, the mask with 255) and a random horizontal flip, the same
        geometry for every modality and the mask. Eval squashes rgb and depth to image_size.
        Splits: 'train' and 'test' ('val' / 'validation' select 'test').
      augment: whether training applies the scale/crop/flip above (default True).
      depth_scale: 'geminifusion' (default: depth / 255, one channel, shape (S, S, 1)) or
        'tokenfusion' (depth / 5000, repeated to three channels, shape (S, S, 3)).
      rgb_mean, rgb_std: ImageNet statistics by default; rgb becomes (x / 255 - mean) / std.
        With a pretrained rgb encoder, experiments.main sets them from its checkpoint
        (`mango_jax.encoders.preprocessing.image_statistics`).
      depth_mean, depth_std: depth becomes (depth after depth_scale - depth_mean) / depth_std.
        Default (0, 1): depth as depth_scale leaves it, which an encoder trained from scratch
        adapts to. With a pretrained depth encoder (an RGB checkpoint whose patch kernel is
        summed over colours, i.e. depth repeated to grey RGB), experiments.main sets them to
        the channel means of the checkpoint's rgb statistics (ImageNet / MAE: 0.449, 0.226):
        depth, scaled like a pixel to about [0, 1], then spans what the kernel saw of a grey
        ImageNet image.
      eval_label: 'original' (default: eval labels at the label's own resolution, padded with 255
        to the largest label size of the dataset, plus `label_hw` int32 [B, 2] holding each
        label's true height and width, so metrics follow the protocol "logits resized to the
        label's size") or 'resized' (eval labels nearest-resized to image_size x image_size).

    paired (your own data; `mango_jax.data.paired` has the manifest format):
      paired_name: the prepared dataset's NAME (`<data_dir>/NAME/`).
      modalities: two modality columns of its manifest.
      max_text_len: token ids of text columns are truncated / zero-padded to this length
        (default 0: the longest train text).

    taskonomy (image-to-image translation, values in [-1, 1]):
      modalities: the two source domains (default ('reshading', 'edge_texture'), the paper's
        shade + texture -> RGB). `sources` is the same field (one shared FieldReference:
        setting either sets both). Splits: 'train' and 'val' ('test' selects 'val').
      target: the target domain (default 'rgb'); its image is `batch['label']`.
      image_size: 256 (training crop; eval resizes straight to it).
      load_size: 286 (training resize before the random crop).
      augment: training resize/crop/flip (default True).
      Domains: rgb, normal, reshading, depth_euclidean, depth_zbuffer, principal_curvature,
        edge_occlusion, edge_texture, segment_unsup2d, segment_unsup25d.
    """
    spec = get_spec(name)
    cfg = ml_collections.ConfigDict()
    cfg.name = name
    cfg.data_dir = "data"
    cfg.modalities = ()
    cfg.num_workers = 2
    cfg.num_threads = 4
    cfg.prefetch_batches = 4
    cfg.seed = 0
    cfg.shuffle = True
    spec.add_defaults(cfg)
    return cfg


_LOCK = threading.Lock()
_BUILDERS: dict = {}


def _builder(cfg):
    spec = get_spec(cfg.name)
    path = os.path.join(os.path.abspath(spec.prepared_dir(cfg)), "dataset_info.json")
    key = path
    stamp = os.stat(path).st_mtime_ns if os.path.exists(path) else None
    with _LOCK:
        hit = _BUILDERS.get(key)
        if hit is not None and hit[0] == stamp and stamp is not None:
            return hit[1]
    builder = spec.builder(cfg)  # Raises DataNotFoundError when missing.
    with _LOCK:
        _BUILDERS[key] = (stamp, builder)
    return builder


def ensure_prepared(data_config) -> None:
    """Makes sure the prepared dataset exists under `data_config.data_dir`.

    mfeat is prepared from the embedded archive when missing; every other dataset raises
    `DataNotFoundError` naming the files to put where and the `python -m
    mango_jax.data.prepare ...` command.
    """
    spec = get_spec(data_config.name)
    spec.validate(data_config)
    if spec.is_prepared(data_config):
        return
    if not spec.prepare_default(data_config):
        raise DataNotFoundError(spec.missing_message(data_config))


def dataset_info(data_config) -> DatasetInfo:
    """Task, per-modality shapes and kinds, classes, label shape and split sizes."""
    spec = get_spec(data_config.name)
    spec.validate(data_config)
    return spec.info(data_config, _builder(data_config))


def num_examples(data_config, split: str) -> int:
    """Examples in `split` (all processes together, before padding or dropping)."""
    spec = get_spec(data_config.name)
    split = spec.canonical_split(split)
    return int(_builder(data_config).info.splits[split].num_examples)


def make_iterator(
    data_config,
    split: str,
    *,
    batch_size: int,
    train: bool,
    seed: int,
    shard_by_process: bool = True,
    num_workers: int | None = None,
    shard_options: grain.sharding.ShardOptions | None = None,
) -> grain.DatasetIterator:
    """A checkpointable grain iterator of batches of `split` (see `pipeline` for the details).

    Args:
      data_config: from `default_config` (possibly modified).
      split: 'train', 'val' (alias 'validation', 'dev') or 'test', as the dataset has them.
      batch_size: examples per batch *per process*; the global batch is batch_size × P.
      train: True: global seeded shuffle, endless epochs, augmentation, mask all True; process
        p of P reads rows [p·B, (p+1)·B) of each global batch (a `pipeline.TrainIterator`).
        False: one pass in order, no augmentation, the last batch padded to full size with
        `mask` False on the padding; process p reads examples p, p+P, ...
      seed: shuffle and augmentation seed (the same in every process).
      shard_by_process: shard over `grain.sharding.ShardByJaxProcess` as above; False reads
        the whole split (or every global batch) in every process.
      num_workers: grain worker processes; None takes `data_config.num_workers`.
      shard_options: explicit `grain.sharding.ShardOptions` (overrides `shard_by_process`;
        used by tests to simulate processes).

    Returns:
      A `grain.DatasetIterator` of dicts of NumPy arrays: one entry per modality in
      `data_config.modalities`, 'label', 'mask' (bool [B]) and, for segmentation eval with
      `eval_label='original'`, 'label_hw' (int32 [B, 2]).
    """
    spec = get_spec(data_config.name)
    spec.validate(data_config)
    ensure_prepared(data_config)
    split = spec.canonical_split(split)
    builder = _builder(data_config)
    info = spec.info(data_config, builder)
    if split not in builder.info.splits:
        raise ValueError(f"{data_config.name} has no split {split!r}")
    source = builder.as_data_source(split=split)
    if spec.cache_in_memory:
        source = pipeline.InMemorySource(source)
    if shard_options is None:
        shard_options = (
            grain.sharding.ShardByJaxProcess()
            if shard_by_process
            else grain.sharding.NoSharding()
        )
    transform = spec.transform(data_config, info, train=train)
    workers = data_config.num_workers if num_workers is None else num_workers

    def open_iterator(ds):
        return pipeline.to_iterator(
            ds,
            num_workers=workers,
            num_threads=data_config.get("num_threads", 4),
            prefetch_batches=data_config.get("prefetch_batches", 4),
            finalize=getattr(transform, "finalize_batch", None),
        )

    if not train:
        return open_iterator(pipeline.eval_batches(source, transform, batch_size=batch_size,
                                                   shard_options=shard_options))
    batches = pipeline.train_batches(source, transform, batch_size=batch_size, seed=seed,
                                     shard_options=shard_options,
                                     shuffle=bool(data_config.get("shuffle", True)))
    return pipeline.TrainIterator(batches, global_batch_size=batch_size * shard_options.shard_count,
                                  open_iterator=open_iterator)
