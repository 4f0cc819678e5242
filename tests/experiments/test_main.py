"""The entry point's result tables."""

from experiments.main import format_comparison
from mango_jax.results import Results


def _results(test_metrics, params, seconds):
    return Results(experiment="mfeat", fusion="x", splits={"test": test_metrics}, params=params,
                   train_time_s=seconds)


def test_comparison_lists_the_metrics_every_method_reports():
    table = format_comparison({
        "mango": _results({"accuracy": 0.9875, "loss": 0.1, "nll_bpd": 2.0, "aux/nll": 0.02},
                          734_346, 161.9),
        "tokenfusion": _results({"accuracy": 0.97, "tokenfusion_substituted": 0.46}, 834_588,
                                71.7),
    }).splitlines()
    assert table[0] == "test split"
    assert table[1].split() == ["method", "accuracy", "params", "train", "s"]
    assert table[2].split() == ["mango", "0.9875", "734,346", "161.9"]
    assert table[3].split() == ["tokenfusion", "0.9700", "834,588", "71.7"]
    assert len({len(line) for line in table[1:]}) == 1  # columns line up
