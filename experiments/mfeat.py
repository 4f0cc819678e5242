"""MANGO on UCI Multiple Features (the embedded default data; `make run`).

    python -m experiments.main --config=experiments/mfeat.py                 # pix + fou
    python -m experiments.main --config=experiments/mfeat.py:views=fac+zer   # any two views
    python -m experiments.main --config=experiments/mfeat.py:fusion=concat   # a baseline
    python -m experiments.main --config=experiments/mfeat.py:fusion=mango+gmu+mbt  # compare
    python -m experiments.main --config=experiments/mfeat.py:runlocal        # smoke run

Arguments: views (two of fou, fac, kar, pix, zer, mor joined by '+'), fusion (names from
`mango_jax.fusion.NAMES` joined by '+'; several, or 'all', train one after another into
<workdir>/<name> and print one comparison table), flow (flow layer for MANGO), blocks (flow
blocks / fusion layers), runlocal (a few steps at tiny sizes).
"""

from __future__ import annotations

from experiments.common import base_config, check_flow, parse_arg, select_fusion
from mango_jax import flows
from mango_jax.data.mfeat import VIEWS
from mango_jax.errors import ConfigError

ARGS = {"views": "pix+fou", "fusion": "mango", "flow": "mango", "blocks": 4, "runlocal": False}


def get_config(arg: str | None = None):
    args = parse_arg(arg, ARGS)
    check_flow(args)
    views = tuple(args.views.split("+"))
    if len(views) != 2 or len(set(views)) != 2 or not set(views) <= set(VIEWS):
        raise ConfigError(f"views={args.views!r}: name two different views of "
                          f"{'|'.join(VIEWS)} joined by '+', e.g. pix+fou")
    config = base_config("mfeat", "mfeat")
    config.data.modalities = views

    # E: an MLP tokenizer of 8 tokens per view; D = 64.
    config.model.update(dim=64, head_dropout=0.2)
    config.model.encoder.update(vector_tokens=8, vector_hidden=256, dropout=0.2)
    # G and λ.
    config.model.fusion.nll_weight = 0.01
    flow = config.model.fusion.flow
    flow.update(layer=args.flow, num_blocks=args.blocks,
                block_pattern=flows.DEFAULT_BLOCK_PATTERN, num_heads=4, coupling_hidden=128)
    # At these sizes the step is bound by memory traffic: recomputing each block (remat) in
    # scanned pairs ran a faster train step than the plain unrolled G on 2 CPU cores
    # (benchmarks/flow_modes_mfeat_cpu.txt); the values are the same.
    flow.update(remat=True, scan=True)

    # The package optimizer (cosine schedule) at these settings; 60 epochs at batch 64.
    config.optimizer.update(learning_rate=2e-3, weight_decay=0.05, warmup_steps=50)
    config.update(batch_size=64, eval_batch_size=200, num_steps=0, num_epochs=60,
                  log_every=100, eval_every=300, checkpoint_every=300,
                  best_metric="accuracy", best_mode="max", eval_splits=("val", "test"))

    if args.runlocal:  # 6 steps at D = 16, 4 tokens per view, one block
        config.update(num_steps=6, log_every=2, eval_every=3, checkpoint_every=3,
                      eval_batch_size=400)
        config.model.dim = 16
        config.model.encoder.update(vector_tokens=4, vector_hidden=32)
        flow.update(num_blocks=1, num_heads=2, coupling_hidden=16)
    select_fusion(config, args.fusion, dense=False)  # last: a baseline takes G's depth
    return config
