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

from experiments.common import base_config, parse_arg, select_fusion


def get_config(arg: str | None = None):
    args = parse_arg(arg, {"views": "pix+fou", "fusion": "mango", "flow": "mango", "blocks": 4,
                           "runlocal": False})
    config = base_config("mfeat", "mfeat")
    views = tuple(args.views.split("+"))
    if len(views) != 2:
        raise ValueError(f"views={args.views!r}: name two views joined by '+', e.g. pix+fou")
    config.data.modalities = views

    config.model.dim = 64
    config.model.encoder.vector_tokens = 8
    config.model.encoder.vector_hidden = 256
    config.model.encoder.dropout = 0.2
    config.model.head_dropout = 0.2
    flow = config.model.fusion.flow
    flow.num_blocks = args.blocks
    flow.num_heads = 4
    flow.coupling_hidden = 128
    flow.layer = args.flow
    config.model.fusion.nll_weight = 0.01
    select_fusion(config, args.fusion, dense=False)

    config.batch_size = 64
    config.eval_batch_size = 200
    config.num_epochs = 60
    config.optimizer.learning_rate = 2e-3
    config.optimizer.weight_decay = 0.05
    config.optimizer.warmup_steps = 50
    config.log_every = 100
    config.eval_every = 300
    config.checkpoint_every = 300
    config.best_metric = "accuracy"

    if args.runlocal:
        config.num_steps = 6
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
        config.eval_batch_size = 400
        config.model.dim = 16
        config.model.encoder.vector_tokens = 4
        config.model.encoder.vector_hidden = 32
        flow.num_blocks = 1
        flow.num_heads = 2
        flow.coupling_hidden = 16
        if "num_layers" in config.model.fusion:
            config.model.fusion.num_layers = 1
    return config
