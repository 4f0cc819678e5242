"""A user's mistake in a config or on the command line ends each command with one line
`error: ...` on stderr and exit status 2, no traceback; and the config a run prints and saves is
the model it builds (experiments.main.finalize)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from absl import flags
from flax import nnx

from experiments import cli, mfeat
from experiments import main as entry
from mango_jax import data
from mango_jax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_main(argv: list[str]) -> None:
    """`python -m experiments.main ARGV` in this process (as experiments/main.py runs it)."""
    saved = sys.argv
    sys.argv = ["main", *argv]  # config_flags finds the --config.* overrides in sys.argv
    try:
        cli.run(entry.main)
    finally:
        sys.argv = saved
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # defined by this call's parse; the next one redefines
        flags.FLAGS.unparse_flags()


def one_error_line(capsys, expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err


MISTAKES = {  # --config=... and overrides -> what the one line says
    "views": (["experiments/mfeat.py:views=pix+abc"], "views='pix+abc': name two different"),
    "blocks": (["experiments/mfeat.py:blocks=0"], "blocks=0; G needs at least one block"),
    "argument type": (["experiments/mfeat.py:blocks=x"], "blocks='x': expected int"),
    "argument": (["experiments/mfeat.py:bogus=1"], "unknown config argument 'bogus'"),
    "method": (["experiments/mfeat.py:fusion=nope"], "unknown fusion ['nope']"),
    "dense method": (["experiments/nyudv2.py:fusion=gmu"], "cannot decode"),
    "field": (["experiments/mfeat.py", "--config.model.fusion.flow.num_blcks=3"],
              "--config.model.fusion.flow.num_blcks: the config has no field 'num_blcks' "
              "(Did you mean \"num_blocks\""),
    "override type": (["experiments/mfeat.py", "--config.batch_size=abc"],
                      "flag --config.batch_size=abc: invalid literal"),
    "config file": (["experiments/nope.py", "--config.seed=1"],
                    "--config: cannot load the config file: [Errno 2]"),
    "override value": (["experiments/mfeat.py", "--config.model.fusion.flow.num_blocks=0"],
                       "model.fusion.flow.num_blocks=0: G needs at least one block"),
    "block pattern": (["experiments/mfeat.py", "--config.model.fusion.flow.block_pattern="
                       "('mmca_ab', 'lica', 'nope')"],
                      "model.fusion.flow.block_pattern has unknown layers ['nope']"),
    "data field": (["experiments/mfeat.py", "--config.data.modalities=('pix', 'pix')"],
                   "data: mfeat modalities must be two different views"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_config_mistakes_end_in_one_error_line_and_status_2(case, mfeat_data_dir, tmp_path,
                                                            capsys):
    config, *overrides = MISTAKES[case][0]
    with pytest.raises(SystemExit) as exit_:
        run_main([f"--config={config}", *overrides, f"--config.data.data_dir={mfeat_data_dir}",
                  f"--workdir={tmp_path / 'work'}", "--nodistributed"]
                 if case != "config file" else [f"--config={config}", *overrides])
    assert exit_.value.code == 2
    one_error_line(capsys, MISTAKES[case][1])
    assert not (tmp_path / "work").exists()


def test_eval_without_a_checkpoint_ends_in_one_error_line(mfeat_data_dir, tmp_path, capsys):
    work = tmp_path / "work"
    with pytest.raises(SystemExit) as exit_:
        run_main(["--config=experiments/mfeat.py:runlocal", f"--config.data.data_dir="
                  f"{mfeat_data_dir}", f"--workdir={work}", "--mode=eval", "--nodistributed"])
    assert exit_.value.code == 2
    one_error_line(capsys, f"no checkpoint in {work}/checkpoints to evaluate; train first")


def test_unknown_flag_and_bugs(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_main(["--config=experiments/mfeat.py", "--no_such_flag"])
    assert exit_.value.code == 2
    one_error_line(capsys, "Unknown command line flag 'no_such_flag'")
    # A bug is not a user's mistake: it keeps its exception (and traceback).
    assert cli.mistake(ZeroDivisionError("x"), []) is None
    assert cli.mistake(AttributeError("'Model' object has no attribute 'x'"), []) is None


@pytest.mark.parametrize("command", [
    ["experiments.sweep", "--sweep=nope"],
    ["experiments.predict", "--workdir=/nonexistent/run", "--out=/nonexistent/out"],
])
def test_other_commands_end_in_one_error_line(command, tmp_path):
    proc = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert ("no sweep 'nope'" if "sweep" in command[0] else "/nonexistent/run") in lines[0]


def test_finalize_fills_the_fields_the_model_derives(mfeat_data_dir):
    config = mfeat.get_config()
    config.data.data_dir = mfeat_data_dir
    info = data.dataset_info(config.data)
    assert config.model.fusion.flow.dim != config.model.dim  # the package default, unused
    entry.finalize(config, info)
    flow = config.model.fusion.flow
    assert flow.dim == config.model.dim == 64
    assert tuple(flow.tokens_per_modality) == (8, 8) and config.model.tokens_per_modality == 8
    assert config.num_steps == 60 * info.split_sizes["train"] // 64
    config.model.fusion.flow.layer = "nope"
    with pytest.raises(ValueError, match="flow.layer='nope'; valid: .*mango"):
        entry.finalize(config, info)


def test_saved_config_is_the_model_that_ran(mfeat_data_dir, tmp_path, monkeypatch):
    """A run through experiments.main (its Trainer builds the model and saves config.json; the
    training steps are skipped, they change neither): the widths and token counts in
    config.json are the built model's."""
    workdir = tmp_path / "run"
    monkeypatch.setattr(loop.Trainer, "run_until", lambda self, stop_step: None)
    with pytest.raises(SystemExit) as exit_:  # absl's app.run exits with main's status
        run_main(["--config=experiments/mfeat.py:runlocal",
                  f"--config.data.data_dir={mfeat_data_dir}",
                  "--config.num_steps=1", "--config.eval_splits=('val',)",
                  "--config.eval_every=0", f"--workdir={workdir}", "--mode=train",
                  "--nodistributed"])
    assert exit_.value.code in (0, None)
    saved = json.loads((workdir / "config.json").read_text())
    model_config, flow = saved["model"], saved["model"]["fusion"]["flow"]
    config = mfeat.get_config("runlocal")
    config.data.data_dir = mfeat_data_dir
    info = data.dataset_info(config.data)
    model = loop.build_model(config, info)
    batch = {m: jax.ShapeDtypeStruct((2, *info.modality_shapes[m]), jnp.float32)
             for m in config.data.modalities}
    a, b = nnx.eval_shape(lambda model, batch: model.features(batch), model, batch)
    assert flow["dim"] == model_config["dim"] == model.fusion.dim == a.shape[2] == 16
    assert flow["tokens_per_modality"] == [a.shape[1], b.shape[1]] == [4, 4]
    assert model_config["tokens_per_modality"] == 4
    assert saved["num_steps"] == 1
