"""Robustness of a trained run to corrupted and missing modalities, for every fusion method.

    result = evaluate(mango_jax.load("runs/mfeat"))          # -> the robustness.json dict
    python -m experiments.robustness --workdirs=runs/mfeat    # the command around it

On the test split, each modality in turn (the other kept clean) is corrupted at levels p = 0,
0.1, ..., 1 by every corruption of its kind (`mango_jax.data.corruptions`), and removed
altogether under every missing-modality strategy:
- 'input': its input replaced by the train-split mean (token ids: all padding);
- 'latent_zeros' / 'latent_mean': its scale-fixed tokens replaced by zeros / by their
  train-split mean, the fusion and heads run on the result (`MultimodalModel.from_features`);
- 'flow' (flows only): its tokens imputed from the observed modality's as
  `argmax log p(F_A, F_B)` under G, from the latent-mean start, kept scale-fixed
  (`MangoFusion.impute`).
Strategies are compared on the validation split (`best`) and reported on both.

Detectors separate each level's corrupted test examples from the same examples clean (AUROC,
higher score = flagged): every method's maximum-softmax probability (Hendrycks & Gimpel 2017;
multi-class: max p; multi-label: mean of max(p, 1 − p); segmentation: mean over pixels), and
for flows the raw NLL, the typicality test |NLL − mean train NLL| (Nalisnick et al. 2019) and
two cross-modal consistency scores that only a joint density gives, which ask whether the
modality under test agrees with the other one: `cross_modal_distance` (mean squared distance
of its tokens F_B to the flow's imputation F̂_B from F_A) and `conditional_nll`
(log p(F_A, F̂_B) − log p(F_A, F_B): the likelihood lost against the imputation, a
Laplace-style estimate of −log p(F_B | F_A) up to a constant). The imputation from the clean
modality is computed once, so the per-level cost is one forward pass. Robustness scores
follow MultiBench: relative robustness is the trapezoid area under the metric-vs-level curve;
effective robustness is Σ_levels f − (LF + f₀ − LF₀) against a late-fusion run's curve LF.

Everything runs in a few jitted programs, each compiled once per run (levels and keys are
traced, every split is cut into chunks of one size): one forward (features, prediction and, for
flows, log p(F)) serves every level, corruption and modality; one imputation program (both
directions in one batch) runs on the clean val and test splits only. For MANGO most of the time
is that program: its XLA compilation and its gradient steps through G.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from mango_jax import data
from mango_jax.data import corruptions
from mango_jax.flows.impute import missing_mask
from mango_jax.metrics import make_evaluator
from mango_jax.model import fixed_scale
from mango_jax.train.step import resize_to_label_sizes

VERSION = 1
STRATEGIES = ("input", "latent_zeros", "latent_mean", "flow")
FLOW_DETECTORS = ("nll", "typicality", "likelihood_ratio", "cross_modal_distance",
                  "conditional_nll")


def default_config() -> ml_collections.ConfigDict:
    """The `robustness` fields of a run's config (runs without them take these defaults).

    num_levels: corruption levels, evenly spaced over [0, 1] (11: 0, 0.1, ..., 1).
    strategies: the missing-modality strategies to evaluate (`STRATEGIES`; 'flow' is skipped
      for a fusion without a density).
    impute_steps, impute_step_size: the flow imputation's Adam budget.
    batch_size: examples per jitted call. stats_examples: train examples the input and token
      statistics (fills, corruption scales, typical NLL) are taken from. seed: corruption noise.
    """
    config = ml_collections.ConfigDict()
    config.num_levels = 11
    config.strategies = STRATEGIES
    config.impute_steps = 30
    config.impute_step_size = 0.1
    config.batch_size = 1000
    config.stats_examples = 4096
    config.seed = 0
    return config


def settings(run_config) -> ml_collections.ConfigDict:
    """The run's `robustness` fields over the defaults."""
    config = default_config()
    config.update(dict(run_config.get("robustness") or {}))
    return config


# Scores -------------------------------------------------------------------------------------


def auroc(negative, positive) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie): the area under the ROC curve
    (Mann-Whitney U with mid-ranks), as scikit-learn's `roc_auc_score`."""
    neg, pos = np.asarray(negative, np.float64), np.asarray(positive, np.float64)
    if not len(neg) or not len(pos):
        raise ValueError("AUROC needs scores of both classes")
    scores = np.concatenate([neg, pos])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Mid-ranks of tied scores.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(mid, counts)
    u = ranks[len(neg):].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(neg) * len(pos)))


def relative_robustness(levels, curve) -> float:
    """MultiBench's relative robustness: the trapezoid area under metric-vs-level."""
    x, y = np.asarray(levels, np.float64), np.asarray(curve, np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def effective_robustness(curve, late_curve) -> float:
    """MultiBench's effective robustness: Σ_levels f − (LF + f₀ − LF₀), the gain over a
    late-fusion curve shifted to start where f starts."""
    f, lf = np.asarray(curve, np.float64), np.asarray(late_curve, np.float64)
    return float(np.sum(f - (lf + f[0] - lf[0])))


def min_max(values: dict[str, float | None]) -> dict[str, float | None]:
    """Max-min normalisation across runs: (x − min) / (max − min); None where undefined."""
    known = [v for v in values.values() if v is not None and math.isfinite(v)]
    if len(known) < 2 or max(known) == min(known):
        return {k: None for k in values}
    lo, hi = min(known), max(known)
    return {k: None if v is None else (v - lo) / (hi - lo) for k, v in values.items()}


def max_softmax(task: str, prediction: jax.Array) -> jax.Array:
    """`[B]` maximum-softmax confidence as defined per task (module docstring)."""
    prediction = prediction.astype(jnp.float32)
    if task == "multiclass":
        return jnp.max(jax.nn.softmax(prediction, -1), -1)
    if task == "multilabel":
        p = jax.nn.sigmoid(prediction)
        return jnp.mean(jnp.maximum(p, 1 - p), -1)
    if task == "segmentation":
        return jnp.mean(jnp.max(jax.nn.softmax(prediction, -1), -1), axis=(1, 2))
    raise ValueError(f"task {task!r} has no maximum-softmax score")


# Data ---------------------------------------------------------------------------------------


def load_split(data_config, split: str, *, limit: int | None = None,
               batch_size: int = 256) -> dict[str, np.ndarray]:
    """The real (unpadded) examples of `split` in order, as one dict of host arrays."""
    it = data.make_iterator(data_config, split, batch_size=batch_size, train=False, seed=0,
                            shard_by_process=False, num_workers=0)
    parts, count = [], 0
    for batch in it:
        keep = np.asarray(batch["mask"], bool)
        parts.append({k: np.asarray(v)[keep] for k, v in batch.items()})
        count += int(keep.sum())
        if limit is not None and count >= limit:
            break
    if hasattr(it, "close"):
        it.close()
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {k: v[:limit] for k, v in out.items()} if limit else out


def input_stats(examples: dict[str, np.ndarray], modality: str) -> corruptions.InputStats:
    x = np.asarray(examples[modality], np.float64)
    return corruptions.InputStats(mean=x.mean(0).astype(np.float32),
                                  std=x.std(0).astype(np.float32),
                                  low=np.float32(x.min()), high=np.float32(x.max()))


def _chunks(examples: dict[str, np.ndarray], size: int):
    """Chunks of `size` rows (the last one, or a smaller split, padded by repetition, so one
    program serves every split) and each chunk's count of real rows."""
    n = len(next(iter(examples.values())))
    for start in range(0, n, size):
        idx = np.arange(start, start + size) % n
        yield {k: v[idx] for k, v in examples.items()}, min(size, n - start)


# The evaluation ----------------------------------------------------------------------------


class _Programs:
    """The jitted programs of one model: `forward` (features, prediction, max-softmax and, for
    flows, log p(F)), `impute` (flows: each modality's imputation from the other and the
    likelihood at it) and `head` (prediction from given tokens)."""

    def __init__(self, model, task: str, settings, size: int):
        graphdef, state = nnx.split(model)
        self.state, self.size = state, size
        self.is_flow = hasattr(model.fusion, "impute")
        modalities = model.modalities

        def forward(state, batch):
            model = nnx.merge(graphdef, state)
            inputs = {k: v for k, v in batch.items() if k in modalities or k.endswith("_mask")}
            a, b = model.features(inputs)
            prediction = model.from_features(a, b).prediction.astype(jnp.float32)
            out = {"a": a, "b": b, "prediction": prediction}
            if task != "translation":
                out["msp"] = max_softmax(task, prediction)
            if self.is_flow:
                out["ll"] = model.fusion.log_likelihood(a, b)
            return out

        def impute(state, a, b, mean_a, mean_b):
            # Both directions in one batch and one program: rows [a, b̂] then [â, b], each
            # ascent starting from the scale-fixed train mean of the missing tokens.
            fusion = nnx.merge(graphdef, state).fusion
            n, tokens = a.shape[0], (a.shape[1], b.shape[1])
            start_a, start_b = (jnp.broadcast_to(fixed_scale(v), x.shape)
                                for v, x in ((mean_a, a), (mean_b, b)))
            x = jnp.concatenate([jnp.concatenate([a, start_b], 1),
                                 jnp.concatenate([start_a, b], 1)], 0)
            missing = jnp.concatenate([missing_mask(n, tokens, "b"),
                                       missing_mask(n, tokens, "a")], 0)
            x = fusion.impute(x, missing, steps=settings.impute_steps,
                              step_size=settings.impute_step_size, project=fixed_scale)
            ll = fusion.log_likelihood(x[:, :tokens[0]], x[:, tokens[0]:])
            return {"b_hat": x[:n, tokens[0]:], "a_hat": x[n:, :tokens[0]],
                    "ll_b_hat": ll[:n], "ll_a_hat": ll[n:]}

        def head(state, a, b):
            return nnx.merge(graphdef, state).from_features(a, b).prediction.astype(jnp.float32)

        def corrupt(name, x, level, key, stats, mask):
            return corruptions.corrupt(name, x, level, key, stats, mask)

        self._forward, self._impute = jax.jit(forward), jax.jit(impute)
        self._head = jax.jit(head)
        self.corrupt = jax.jit(corrupt, static_argnums=0)

    def _map(self, fn, arrays: dict, keep=None) -> dict[str, np.ndarray]:
        """`fn(state, chunk)` over all rows in fixed-size chunks; host arrays (`keep` keys)."""
        parts = []
        for chunk, real in _chunks(arrays, self.size):
            out = fn(self.state, chunk)
            parts.append({k: np.asarray(v)[:real] for k, v in out.items()
                          if keep is None or k in keep})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def forward(self, examples, keep=None):
        return self._map(self._forward, examples, keep)

    def impute(self, a, b, mean_a, mean_b):
        return self._map(lambda state, c: self._impute(state, c["a"], c["b"], mean_a, mean_b),
                         {"a": a, "b": b})

    def predict(self, a, b) -> np.ndarray:
        return self._map(lambda state, c: {"p": self._head(state, c["a"], c["b"])},
                         {"a": a, "b": b})["p"]


def _metric(evaluator, prediction, examples) -> float:
    batch = {"label": examples["label"], "mask": np.ones(len(prediction), bool)}
    prediction = jnp.asarray(prediction)
    if "label_hw" in examples:  # Segmentation is scored at each example's label size.
        prediction = resize_to_label_sizes(prediction, jnp.asarray(examples["label_hw"]),
                                           examples["label"].shape)
    state = evaluator.update(evaluator.init(), jnp.asarray(prediction), batch)
    return float(evaluator.finalize(state)[evaluator.metric_names[0]])


MAX_FULL_COVARIANCE_DIMS = 4096


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit & Wolf (2004)'s shrunk covariance of the rows of `x` [n, p] and its shrinkage:
    `(1 − s) S + s (tr S / p) I`, with s their consistent estimate of the optimal weight."""
    n, p = x.shape
    x = x - x.mean(0)
    cov = x.T @ x / n
    mu = np.trace(cov) / p
    x2 = x ** 2
    beta = (np.sum(x2.T @ x2) / n - np.sum(cov ** 2)) / (p * n)
    delta = (np.sum(cov ** 2) - 2 * mu * np.trace(cov) + p * mu ** 2) / p
    shrinkage = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1 - shrinkage) * cov + shrinkage * mu * np.eye(p), float(shrinkage)


class Gaussian(NamedTuple):
    """A Gaussian density of feature vectors `[n, p]` fitted on the train split, with the
    Ledoit-Wolf covariance (more dimensions than mfeat has train examples, so the sample
    covariance is singular), or diagonal above `MAX_FULL_COVARIANCE_DIMS` dimensions.

    It is Ren et al. (2019)'s background model for the likelihood ratio
    log p_G(F) − log p_bg(F), fitted on the joint F = [F_A, F_B]: the ratio should cancel what
    both models explain, the first and second moments of the features, and keep what only G
    models (the non-Gaussian dependence a corruption might break); a Gaussian is the simplest
    model with exactly those statistics. G's own prior N(0, I) on z = G(F), the other natural
    background, leaves only log|det ∂G/∂F| in the ratio, G's local volume change, which says
    nothing about F's statistics. Fitted on each modality's tokens alone as well, it gives every
    method two detectors on its own features: the NLL of the modality under test and its
    conditional NLL given the other one, −log p(F_B | F_A) = −log p(F) + log p(F_A) (the
    Gaussian counterpart of the flow's cross-modal scores).
    """

    mean: np.ndarray
    precision: np.ndarray  # [p, p], or [p] when diagonal.
    log_det_cov: float

    @classmethod
    def fit(cls, *tokens: np.ndarray) -> Gaussian:
        """Of the token arrays `[n, T, D]`, concatenated along the tokens and flattened."""
        f = _flat(*tokens)
        if f.shape[1] > MAX_FULL_COVARIANCE_DIMS:
            var = np.maximum(f.var(0), 1e-12)  # A constant channel.
            return cls(f.mean(0), 1.0 / var, float(np.sum(np.log(var))))
        cov, _ = ledoit_wolf(f)
        return cls(f.mean(0), np.linalg.inv(cov), float(np.linalg.slogdet(cov)[1]))

    def log_prob(self, *tokens: np.ndarray) -> np.ndarray:
        """`[B]` log-density in nats."""
        f = _flat(*tokens) - self.mean
        maha = (np.sum(f * f * self.precision, -1) if self.precision.ndim == 1
                else np.einsum("bi,ij,bj->b", f, self.precision, f))
        return -0.5 * (maha + self.log_det_cov + f.shape[1] * np.log(2 * np.pi))


def _flat(*tokens) -> np.ndarray:
    return np.concatenate(tokens, axis=1).astype(np.float64).reshape(len(tokens[0]), -1)


def _detector_scores(out: dict, clean: dict, side: str, typical_nll: float | None,
                     gaussians: dict[str, Gaussian]) -> dict[str, np.ndarray]:
    """Per example, higher = more likely corrupted, for modality `side` ('a' | 'b') under
    test; `clean` holds the flow's imputation of that modality from the other, clean one;
    `gaussians`: the `Gaussian` of the features 'ab', 'a' and 'b'."""
    other = "b" if side == "a" else "a"
    log_p = gaussians["ab"].log_prob(out["a"], out["b"])
    scores = {"gaussian_nll": -gaussians[side].log_prob(out[side]),
              "gaussian_conditional_nll": gaussians[other].log_prob(out[other]) - log_p}
    if "msp" in out:
        scores["max_softmax"] = -out["msp"]
    if "ll" in out:
        scores["nll"] = -out["ll"]
        scores["typicality"] = np.abs(-out["ll"] - typical_nll)  # Two-sided.
        scores["likelihood_ratio"] = log_p - out["ll"]
        scores["cross_modal_distance"] = np.mean((out[side] - clean[f"{side}_hat"]) ** 2, (1, 2))
        scores["conditional_nll"] = clean[f"ll_{side}_hat"] - out["ll"]
    return scores


def evaluate(predictor, *, config: ml_collections.ConfigDict | None = None,
             data_config=None) -> dict[str, Any]:
    """The robustness of a trained run (`mango_jax.load`), as the `robustness.json` dict."""
    settings_ = config or settings(predictor.config)
    data_config = data_config or predictor.config.data
    info, model = predictor.info, predictor.model
    if info.task == "translation":
        raise ValueError("robustness covers the classification and segmentation tasks; a "
                         "translation run has no maximum-softmax score or class metric")
    modalities = model.modalities
    evaluator = make_evaluator(info.task, num_classes=info.num_classes,
                               ignore_index=info.ignore_index)
    metric_name = evaluator.metric_names[0]
    train = load_split(data_config, "train", limit=int(settings_.stats_examples))
    splits = {s: load_split(data_config, s) for s in ("val", "test")}
    # One chunk size for every split, so each program compiles once.
    programs = _Programs(model, info.task, settings_,
                         min(int(settings_.batch_size), len(splits["test"]["label"])))
    stats = {m: input_stats(train, m) for m in modalities
             if info.modality_kinds[m] != "tokens"}

    # Train-split token means (latent filling, imputation start) and typical NLL.
    train_out = programs.forward(train, keep=("a", "b", "ll"))
    token_mean = {"a": train_out["a"].mean(0, keepdims=True),
                  "b": train_out["b"].mean(0, keepdims=True)}
    typical_nll = float(np.mean(-train_out["ll"])) if "ll" in train_out else None
    gaussians = {"ab": Gaussian.fit(train_out["a"], train_out["b"]),
                 "a": Gaussian.fit(train_out["a"]), "b": Gaussian.fit(train_out["b"])}

    levels = np.linspace(0.0, 1.0, int(settings_.num_levels))
    result: dict[str, Any] = {
        "version": VERSION, "fusion": predictor.config.model.fusion.name,
        "task": info.task, "metric": metric_name, "split": "test",
        "modalities": list(modalities), "levels": [round(float(v), 6) for v in levels],
        "settings": settings_.to_dict(), "clean": {}, "corruptions": {}, "missing": {}}
    if "flow" in settings_.strategies and not programs.is_flow:
        result["notes"] = ["'flow' imputation needs a flow fusion (MANGO): skipped"]

    clean = {}
    for split, examples in splits.items():
        clean[split] = programs.forward(examples)
        if programs.is_flow:
            clean[split].update(programs.impute(clean[split]["a"], clean[split]["b"],
                                                token_mean["a"], token_mean["b"]))
        result["clean"][split] = _metric(evaluator, clean[split]["prediction"], examples)

    # Missing modalities.
    for index, m in enumerate(modalities):
        side = "ab"[index]
        per_strategy = {}
        for strategy in settings_.strategies:
            if strategy == "flow" and not programs.is_flow:
                continue
            scores = {}
            for split, examples in splits.items():
                out = clean[split]
                if strategy == "input":
                    filled = dict(examples)
                    if m in stats:
                        filled[m] = np.broadcast_to(stats[m].mean, examples[m].shape).copy()
                    else:
                        filled[m] = np.zeros_like(examples[m])
                        if f"{m}_mask" in filled:
                            filled[f"{m}_mask"] = np.zeros_like(filled[f"{m}_mask"])
                    pred = programs.forward(filled, keep=("prediction",))["prediction"]
                else:
                    fill = {"latent_zeros": np.zeros_like(out[side]),
                            "latent_mean": np.broadcast_to(token_mean[side],
                                                           out[side].shape).copy(),
                            "flow": out.get(f"{side}_hat")}[strategy]
                    a, b = (fill, out["b"]) if side == "a" else (out["a"], fill)
                    pred = programs.predict(a, b)
                scores[split] = _metric(evaluator, pred, examples)
            per_strategy[strategy] = scores
        best = max(per_strategy, key=lambda s: per_strategy[s]["val"])
        result["missing"][m] = {"strategies": per_strategy, "best": best,
                                "best_test": per_strategy[best]["test"]}

    # Corruptions of each modality, the other clean.
    test = splits["test"]
    key = jax.random.key(int(settings_.seed))
    for index, m in enumerate(modalities):
        kind, side = corruptions.input_kind(info, m), "ab"[index]
        clean_scores = _detector_scores(clean["test"], clean["test"], side, typical_nll,
                                        gaussians)
        result["corruptions"][m] = {}
        for c_index, name in enumerate(corruptions.KINDS[kind]):
            curve, msp, aurocs = [], [], {d: [] for d in clean_scores}
            for l_index, level in enumerate(levels):
                k = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, index),
                                                          c_index), l_index)
                x, mask = programs.corrupt(
                    name, jnp.asarray(test[m]), jnp.float32(level), k,
                    stats.get(m, corruptions.InputStats(0.0, 1.0, 0.0, 1.0)),
                    test.get(f"{m}_mask"))
                corrupted = {**test, m: np.asarray(x)}
                if mask is not None:
                    corrupted[f"{m}_mask"] = np.asarray(mask)
                out = programs.forward(corrupted, keep=("prediction", "msp", "ll", "a", "b"))
                curve.append(_metric(evaluator, out["prediction"], test))
                msp.append(float(np.mean(out["msp"])))
                for d, s in _detector_scores(out, clean["test"], side, typical_nll,
                                                 gaussians).items():
                    aurocs[d].append(auroc(clean_scores[d], s))
            result["corruptions"][m][name] = {
                "metric": curve, "max_softmax": msp, "auroc": aurocs,
                "relative_robustness": relative_robustness(levels, curve)}
    result["summary"] = summary(result)
    return result


def add_effective_robustness(result: dict, late: dict | None) -> dict:
    """Fills each curve's `effective_robustness` against the late-fusion run's result (None
    and a note when there is none or its curves do not match)."""
    for m, per in result["corruptions"].items():
        for name, entry in per.items():
            lf = (late or {}).get("corruptions", {}).get(m, {}).get(name)
            entry["effective_robustness"] = (
                None if lf is None or len(lf["metric"]) != len(entry["metric"])
                else effective_robustness(entry["metric"], lf["metric"]))
    if late is None:
        result.setdefault("notes", []).append(
            "effective robustness needs a late-fusion run of the same data (--late=RUN): "
            "left out")
    result["summary"] = summary(result)
    return result


def summary(result: dict) -> dict:
    """Means over modalities and corruptions; each detector's AUROC at the highest level."""
    entries = [e for per in result["corruptions"].values() for e in per.values()]
    eff = [e.get("effective_robustness") for e in entries]
    out = {"clean": result["clean"]["test"],
           "relative_robustness": float(np.mean([e["relative_robustness"] for e in entries])),
           "effective_robustness": (float(np.mean(eff))
                                    if eff and all(v is not None for v in eff) else None),
           "missing": {m: v["best_test"] for m, v in result["missing"].items()}}
    out["auroc_at_max_level"] = {
        f"{m}/{name}": {d: v[-1] for d, v in e["auroc"].items()}
        for m, per in result["corruptions"].items() for name, e in per.items()}
    return out


# Outputs -------------------------------------------------------------------------------------


def plot_curves(results: dict[str, dict], modality_index: int, path: str) -> None:
    """`robustness_<modality>.png`: metric vs level, one panel per corruption, one line per
    run (`results`: label -> robustness dict), the best missing-modality value as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(results.values()))
    m = first["modalities"][modality_index]
    names = list(first["corruptions"][m])
    # 20 distinct colours (the default cycle repeats after 10), the legend beside the panels.
    colors = plt.get_cmap("tab20" if len(results) > 10 else "tab10").colors
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names) + 1.5, 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for i, (label, r) in enumerate(results.items()):
            mod = r["modalities"][modality_index]
            entry = r["corruptions"][mod][name]
            color = colors[i % len(colors)]
            ax.plot(r["levels"], entry["metric"], marker=".", label=label, color=color)
            ax.plot([1.05], [r["missing"][mod]["best_test"]], "o", color=color)
        ax.set_title(f"{m}: {name}")
        ax.set_xlabel("level p (dot: missing, best strategy)")
        ax.set_ylabel(first["metric"])
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(results: dict[str, dict]) -> tuple[list[str], list[list[str]], dict]:
    """The combined table: header, rows and the normalised scores (`min_max` across runs)."""
    first = next(iter(results.values()))
    mods = first["modalities"]
    rel = {k: r["summary"]["relative_robustness"] for k, r in results.items()}
    eff = {k: r["summary"]["effective_robustness"] for k, r in results.items()}
    rel_n, eff_n = min_max(rel), min_max(eff)
    head = ["run", "fusion", f"clean {first['metric']}"]
    for m in mods:
        head += [f"no {m}: {s}" for s in STRATEGIES] + [f"no {m}: best on val"]
    head += ["rel. rob.", "rel. (norm.)", "eff. rob.", "eff. (norm.)"]
    for m in mods:
        name = next(iter(first["corruptions"][m]))
        head += [f"AUROC {m}/{name} p=1: {d}" for d in ("max-softmax", "gaussian_nll",
                                                          "best flow")]

    def f(v, digits=4):
        return "–" if v is None else f"{v:.{digits}f}"

    rows = []
    for k, r in results.items():
        row = [k, r["fusion"], f(r["clean"]["test"])]
        for m in mods:
            per = r["missing"][m]["strategies"]
            row += [f(per[s]["test"]) if s in per else "–" for s in STRATEGIES]
            row += [f"{r['missing'][m]['best']} {f(r['missing'][m]['best_test'])}"]
        row += [f(rel[k]), f(rel_n[k], 3), f(eff[k]), f(eff_n[k], 3)]
        for m in mods:
            entry = next(iter(r["corruptions"][m].values()))["auroc"]
            flow = {d: v[-1] for d, v in entry.items() if d in FLOW_DETECTORS}
            best = max(flow, key=flow.get) if flow else None
            row += [f(entry["max_softmax"][-1], 3), f(entry["gaussian_nll"][-1], 3),
                    f"{best} {f(flow[best], 3)}" if best else "–"]
        rows.append(row)
    return head, rows, {"relative_robustness": rel_n, "effective_robustness": eff_n}


def markdown(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
