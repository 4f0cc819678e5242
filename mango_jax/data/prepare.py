r"""Prepares a dataset from the files a user has into `<data_dir>/<name>/`.

  python -m mango_jax.data.prepare --dataset=mfeat [--manual_dir=PATH] [--data_dir=data/]
  python -m mango_jax.data.prepare --dataset=mmimdb --manual_dir=PATH [--split_rows=A,B] \
      [--vocab_file=FILE | --tokenizer=CLIP_FOLDER] [--max_vocab=N]
  python -m mango_jax.data.prepare --dataset=nyudv2 --manual_dir=PATH
  python -m mango_jax.data.prepare --dataset=sunrgbd --manual_dir=PATH
  python -m mango_jax.data.prepare --dataset=taskonomy --manual_dir=PATH
  python -m mango_jax.data.prepare --dataset=paired --manual_dir=PATH --name=NAME \
      [--text_columns=A,B] [--classes=FILE] [--task=TASK] [--ignore_index=255]

What to put in `--manual_dir` for each dataset: `data/README.md`. The form of MM-IMDB (the
MultiBench `multimodal_imdb.hdf5` or the original `mmimdb/` release) and of NYUDv2 (the
TokenFusion/GeminiFusion folder or the official `.mat` files) is told apart by what is in the
folder. `paired` reads `PATH/manifest.csv` (format: `mango_jax/data/paired.py`) into
`<data_dir>/NAME/`. Preparation writes into a temporary folder and renames the finished
dataset into place, so a failed run leaves nothing that reads as prepared.
"""

from __future__ import annotations

import sys

from absl import app, flags

from mango_jax.data.spec import DATASETS, get_spec

FLAGS = flags.FLAGS

flags.DEFINE_enum("dataset", None, list(DATASETS), "Dataset to prepare.")
flags.DEFINE_string(
    "manual_dir", None, "Folder with the raw files (mfeat: optional, default the embedded copy)."
)
flags.DEFINE_string("data_dir", "data", "Dataset root; the result lands in <data_dir>/<dataset>/.")
flags.DEFINE_bool("overwrite", False, "Re-prepare even if a prepared copy exists.")
flags.DEFINE_string(
    "split_rows",
    None,
    "MM-IMDB MultiBench form: TRAIN_END,VAL_END row boundaries (default 15552,18160); the "
    "test split is VAL_END..N.",
)
flags.DEFINE_string(
    "vocab_file",
    None,
    "MM-IMDB original form: a vocabulary file (one token per line; ids are 2 + line number, "
    "0 = padding, 1 = unknown). Default: build the vocabulary from the train split's plots.",
)
flags.DEFINE_string(
    "tokenizer",
    None,
    "MM-IMDB original form: a CLIP model folder (or its tokenizer.json); the plots become CLIP "
    "BPE ids (77 at most, start and end tokens) in their own prepared copy (data config "
    "tokenizer='clip'). Refused for the MultiBench HDF5, which holds no text.",
)
flags.DEFINE_enum(
    "rgb_encoding",
    "jpeg95",
    ["jpeg95", "source"],
    "NYUDv2 / SUN RGB-D / MM-IMDB: 'jpeg95' stores RGB PNGs (and HDF5 posters) re-encoded as "
    "JPEG quality 95 (JPEG files are kept as they are): 5x smaller, 3x faster to decode; "
    "'source' keeps the source bytes (PNG for arrays).",
)
flags.DEFINE_integer(
    "max_vocab", 30000, "MM-IMDB original form / paired text: largest vocabulary built from "
    "the train split."
)
flags.DEFINE_integer(
    "min_count", None, "MM-IMDB original form / paired text: a word needs this many train "
    "occurrences (default 2 for MM-IMDB, 1 for paired)."
)
flags.DEFINE_string("name", None, "paired: the dataset's name; it is prepared into "
                    "<data_dir>/<name>/.")
flags.DEFINE_list("text_columns", [], "paired: modality columns that hold text.")
flags.DEFINE_string("classes", None, "paired: a file of class names, one a line, in label order "
                    "(default: the names sorted).")
flags.DEFINE_enum("task", None, ["multiclass", "multilabel", "segmentation", "translation"],
                  "paired: the task, where the labels leave it open (default: inferred).")
flags.DEFINE_integer("ignore_index", 255, "paired segmentation: the mask id that is not scored.")


def prepare(dataset: str, manual_dir: str | None, data_dir: str = "data", **options) -> str:
    """Python entry point of the command; returns the prepared version folder."""
    spec = get_spec(dataset)
    options = {k: v for k, v in options.items() if v is not None}
    return spec.prepare(data_dir=data_dir, manual_dir=manual_dir, **options)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.dataset is None:
        raise app.UsageError("--dataset is required: one of " + ", ".join(DATASETS))
    options = {"overwrite": FLAGS.overwrite}
    if FLAGS.dataset == "mmimdb":
        options.update(
            split_rows=FLAGS.split_rows,
            vocab_file=FLAGS.vocab_file,
            tokenizer=FLAGS.tokenizer,
            max_vocab=FLAGS.max_vocab,
            min_count=FLAGS.min_count,
            rgb_encoding=FLAGS.rgb_encoding,
        )
    elif FLAGS.dataset in ("nyudv2", "sunrgbd"):
        options.update(rgb_encoding=FLAGS.rgb_encoding)
    elif FLAGS.dataset == "paired":
        if not FLAGS.name:
            raise app.UsageError("--dataset=paired needs --name=NAME (it lands in "
                                 "<data_dir>/NAME/)")
        options.update(name=FLAGS.name, text_columns=FLAGS.text_columns, classes=FLAGS.classes,
                       task=FLAGS.task, ignore_index=FLAGS.ignore_index,
                       max_vocab=FLAGS.max_vocab, min_count=FLAGS.min_count)
    if FLAGS.dataset != "paired":
        for name in ("name", "classes", "task"):
            if getattr(FLAGS, name) is not None:
                raise app.UsageError(f"--{name} only applies to --dataset=paired")
    if FLAGS.dataset != "mmimdb":
        for name in ("split_rows", "vocab_file", "tokenizer"):
            if getattr(FLAGS, name) is not None:
                raise app.UsageError(f"--{name} only applies to --dataset=mmimdb")
    if FLAGS.manual_dir is None and FLAGS.dataset != "mfeat":
        print(get_spec(FLAGS.dataset).builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS, file=sys.stderr)
        raise app.UsageError(f"--manual_dir is required for {FLAGS.dataset}")
    path = prepare(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, **options)
    print(f"Prepared {FLAGS.name or FLAGS.dataset} in {path}"
          + ("" if FLAGS.overwrite else " (an existing copy is kept; --overwrite rebuilds it)"))


if __name__ == "__main__":
    app.run(main)
