"""Two short mfeat trials, MANGO and feature concatenation: the sweep machinery end to end in a
few minutes on a CPU.

    python -m experiments.sweep --sweep=demo --launcher=local
"""

from experiments.sweeps import trial


def get_trials():
    return [trial("experiments/mfeat.py", fusion=fusion, runlocal=True,
                  overrides={"num_steps": 60, "optimizer.warmup_steps": 10})
            for fusion in ("mango", "concat")]
