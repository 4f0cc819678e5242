"""Sweeps: trial names, the ready-made tables against the report, and the three launchers."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest
from xla_env import devices_flag

from experiments import sweep, sweeps
from mango_jax import paper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLES = ("table4", "table5", "table6_7")


def test_trial_names_derive_from_config_arguments_and_overrides():
    a = sweeps.trial("experiments/nyudv2.py", flow="glow", blocks=8, latent=False)
    assert a.args == {"flow": "glow", "blocks": "8", "latent": "false"}
    assert a.flags() == ["--config=experiments/nyudv2.py:flow=glow,blocks=8,latent=false"]
    assert a == sweeps.trial("experiments/nyudv2.py", flow="glow", blocks=8, latent=False)
    others = [sweeps.trial("experiments/sunrgbd.py", flow="glow", blocks=8, latent=False),
              sweeps.trial("experiments/nyudv2.py", flow="glow", blocks=12, latent=False),
              sweeps.trial("experiments/nyudv2.py", flow="glow", blocks=8, latent=False,
                           overrides={"optimizer.learning_rate": 1e-4})]
    assert len({t.name for t in [a, *others]}) == 4
    assert others[2].flags()[1] == "--config.optimizer.learning_rate=0.0001"
    long = [sweeps.trial("experiments/mfeat.py", overrides={"data.data_dir": "/x" * 80 + str(i)})
            for i in range(2)]
    assert all(len(t.name) <= sweeps.MAX_NAME for t in long) and long[0].name != long[1].name
    grid = sweeps.grid("experiments/mfeat.py", fixed={"runlocal": True}, fusion=("a", "b"),
                       blocks=(1, 2))
    assert [t.arg for t in grid] == [f"runlocal=true,fusion={f},blocks={b}"
                                     for f in ("a", "b") for b in (1, 2)]


@pytest.mark.parametrize("name", sweeps.available())
def test_ready_made_sweeps_build_valid_configs(name):
    trials = sweeps.load(name)
    assert trials
    sweeps.check(trials)  # every argument and override exists in the real config files
    for t in trials:
        assert all(c.isalnum() or c in ".+_-" for c in t.name), t.name


def _settings(t):
    config = sweeps.build_config(t)
    flow = config.model.fusion.flow
    kinds = frozenset(k.split("_")[0] for k in flow.block_pattern) & paper.FULL_PARTITIONS
    return config.experiment, flow.layer, flow.num_blocks, kinds, config.model.latent_model


def test_tables_sweeps_fill_the_report_tables():
    """Each sweep's trials land in every row of its table, on both datasets, with everything
    else at the configuration the report holds fixed."""
    main = paper.MAIN_CONFIG
    fixed = (main["flow_layer"], main["num_blocks"], main["partitions"], main["latent_model"])
    want = {
        "table4": {(layer, *fixed[1:]) for _, layer, _, _ in paper.TABLE4},
        "table5": {(fixed[0], fixed[1], parts, fixed[3]) for parts, _, _ in paper.TABLE5},
        "table6_7": {(fixed[0], blocks, fixed[2], latent) for blocks in (6, 8, 12, 16)
                     for latent in (True, False)},
    }
    for name in TABLES:
        got = [_settings(t) for t in sweeps.load(name)]
        for dataset in paper.SEG_DATASETS:
            assert {s[1:] for s in got if s[0] == dataset} == want[name], (name, dataset)
        assert len(got) == 2 * len(want[name])
    # The paper's configuration is one trial shared by the three tables: it trains once.
    shared = [{t.name for t in sweeps.load(name)} for name in TABLES]
    assert len(shared[0] & shared[1] & shared[2]) == 2  # NYUDv2 and SUN RGB-D


def test_bad_sweeps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no sweep 'nope'.*demo"):
        sweeps.load("nope")
    clash = tmp_path / "clash.py"
    clash.write_text("from experiments.sweeps import trial\n"
                     "def get_trials():\n"
                     "    return [trial('experiments/mfeat.py', runlocal=True)] * 2\n")
    with pytest.raises(ValueError, match="several trials named"):
        sweeps.load(str(clash))
    for bad, match in [(sweeps.trial("experiments/mfeat.py", view="pix"), "unknown config arg"),
                       (sweeps.trial("experiments/mfeat.py", overrides={"optimizer.lr": 1}),
                        "no field 'optimizer.lr'"),
                       (sweeps.trial("experiments/mfeat.py", fusion="mango+concat"),
                        "several methods")]:
        with pytest.raises(ValueError, match=match):
            sweeps.check([bad])
    with pytest.raises(ValueError, match="key=value"):
        sweep.set_flags(["num_steps"])


STUB = """\
#!{python}
# Stands in for `python -m experiments.main`: records its run, writes results.json.
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
work = args["--workdir"]
start = time.time()
time.sleep(1)
with open(os.path.join(work, "runs.jsonl"), "a") as f:
    f.write(json.dumps({{"start": start, "end": time.time(), "argv": sys.argv[1:]}}) + "\\n")
if "fail" in args["--config"]:
    sys.exit(3)
meta = {{"experiment": "mfeat", "fusion": args["--config"].rsplit("=", 1)[1],
        "sources": ["pix", "fou"], "target": "multiclass", "steps": 1}}
with open(os.path.join(work, "results.json"), "w") as f:
    json.dump({{"val": {{"accuracy": 0.5}}, "meta": meta}}, f)
"""


@pytest.fixture
def stub_python(tmp_path):
    path = tmp_path / "stub_python"
    path.write_text(STUB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _runs(root, t):
    with open(os.path.join(root, t.name, "runs.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_local_launcher_parallel_skip_failures_and_report(tmp_path, stub_python):
    root = str(tmp_path / "runs")
    trials = [sweeps.trial("experiments/mfeat.py", fusion=f) for f in ("a", "b", "c", "fail")]
    done = trials[2]
    os.makedirs(os.path.join(root, done.name))
    with open(os.path.join(root, done.name, "results.json"), "w") as f:
        json.dump({"val": {"accuracy": 1.0}, "meta": {"experiment": "mfeat", "fusion": "c"}}, f)
    lines = []
    status = sweep.run_local(trials, root=root, extra=["--config.num_steps=2"], parallel=2,
                             python=stub_python, log=lines.append)
    assert status == {trials[0].name: "done", trials[1].name: "done", done.name: "skipped",
                      trials[3].name: "failed (exit 3)"}
    assert not os.path.exists(os.path.join(root, done.name, "runs.jsonl"))  # never started
    first, second = (_runs(root, t)[0] for t in trials[:2])
    assert second["start"] < first["end"] and first["start"] < second["end"]  # two at a time
    assert first["argv"] == sweep.main_args(trials[0], os.path.join(root, trials[0].name),
                                            ["--config.num_steps=2"])
    assert any("FAIL" in line and trials[3].name in line for line in lines)
    assert os.path.exists(os.path.join(root, trials[3].name, "sweep.log"))
    # Run again: only the failed trial starts again.
    status = sweep.run_local(trials, root=root, extra=[], python=stub_python, log=lines.append)
    assert [n for n, s in status.items() if s != "skipped"] == [trials[3].name]
    assert len(_runs(root, trials[0])) == 1 and len(_runs(root, trials[3])) == 2
    # The report lists the three finished trials (not the failed one).
    runs_md = sweep.write_report(trials, root, str(tmp_path / "report"))
    for t in trials:
        assert (t.name in runs_md) == (t is not trials[3])
    assert os.path.exists(tmp_path / "report" / "report.md")


def test_tpu_command_and_sbatch_script_run_the_trial_once(tmp_path, stub_python):
    root = str(tmp_path / "runs")
    t = sweeps.trial("experiments/mfeat.py", fusion="concat", runlocal=True)
    work = os.path.join(root, t.name)
    os.makedirs(work)
    command = sweep.tpu_command(t, work, ["--config.num_steps=3"], tpu_name="pod", zone="z",
                                project=None, repo_dir=ROOT, python=stub_python,
                                setup="true")
    assert command[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", "--zone=z"]
    assert command[7] == "--worker=all" and command[8].startswith("--command=")
    remote = command[8].removeprefix("--command=")
    # What every TPU host runs: the trial the first time, nothing once it has finished.
    for _ in range(2):
        subprocess.run(["bash", "-c", remote], check=True)
    (run,) = _runs(root, t)
    assert run["argv"] == ["-m", "experiments.main", *t.flags(), "--config.num_steps=3",
                           f"--workdir={work}"]

    t2 = sweeps.trial("experiments/mfeat.py", fusion="late", runlocal=True)
    work2 = os.path.join(root, t2.name)
    os.makedirs(work2)
    script = sweep.sbatch_script(t2, work2, [], job="j", log=str(tmp_path / "j-%j.out"),
                                 repo_dir=ROOT, python=stub_python, setup="", nodes=2,
                                 gpus_per_node=4, cpus_per_task=6, time_limit="1:00:00",
                                 partition="gpu", sbatch=["--account=abc"])
    options = [line.split(" ", 1)[1] for line in script.splitlines()
               if line.startswith("#SBATCH")]
    assert {"--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4", "--partition=gpu",
            "--account=abc"} <= set(options)
    # Run the script with an `srun` that runs its command once, as for a one-task step.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    (tmp_path / "job.sbatch").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for _ in range(2):
        out = subprocess.run(["bash", str(tmp_path / "job.sbatch")], env=env, check=True,
                             capture_output=True, text=True).stdout
    assert "finished already" in out
    assert len(_runs(root, t2)) == 1


def test_local_sweep_of_a_real_trial_end_to_end(tmp_path, mfeat_data_dir):
    sweep_file = tmp_path / "tiny.py"
    sweep_file.write_text(textwrap.dedent("""\
        from experiments.sweeps import trial

        def get_trials():
            return [trial("experiments/mfeat.py", fusion="concat", runlocal=True,
                          overrides={"num_steps": 2, "eval_every": 0})]
        """))
    root = tmp_path / "runs"
    command = [sys.executable, "-m", "experiments.sweep", f"--sweep={sweep_file}",
               f"--root={root}", f"--set=data.data_dir={mfeat_data_dir}"]
    env = {**os.environ, "XLA_FLAGS": devices_flag(2),
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (t,) = sweeps.load(str(sweep_file))
    with open(root / t.name / "results.json") as f:
        results = json.load(f)
    assert results["meta"]["fusion"] == "concat" and results["meta"]["steps"] == 2
    assert results["meta"]["config"]["data"]["data_dir"] == mfeat_data_dir
    report_md = (root / "reports" / "tiny" / "report.md").read_text()
    assert str(root / t.name) in report_md and str(root / t.name) in out.stdout
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[skip] {t.name}" in again.stdout and "[start" not in again.stdout
