"""Speed and memory of MANGO against reference fusions of the same setting, measured in one run.

    python -m experiments.bench --preset=paper_nyudv2          # Table 8's setting
    python -m experiments.bench --preset=paper_nyudv2_mae      # ... with MAE's ViT-B/16 encoders
    python -m experiments.bench --preset=small                 # a toy version of it
    python -m experiments.bench --config=experiments/mfeat.py  # any MANGO experiment config

`paper_nyudv2` sizes its ViT encoders to Table 8's parameter count (the paper names MAE's ViT
but not its size); `paper_nyudv2_mae` is `experiments/nyudv2.py`, the paper's protocol with
MAE's smallest released encoder, ViT-B/16, for both modalities (308M parameters). Its encoders
start from random weights, since no cost figure depends on them;
`--config=experiments/nyudv2.py:pretrained=paper` builds the same model from the downloaded
checkpoint.

References (`--references`, default: the setting's): a preset, or an experiment on NYUDv2,
compares MANGO with the transformer at G's depth and with GeminiFusion and TokenFusion at the
depth that brings their parameter count nearest MANGO's (Table 8 compares models of similar
size); another experiment config with the transformer and the cross-attention fusion at G's
depth. All share MANGO's encoders,
head, width, tokens and heads; on RGB-depth the references take their homogeneous defaults
(TokenFusion and GeminiFusion share their layers between the modalities, as their papers do).

Prints tables and writes `benchmarks/<setting>_<platform>.json` and a sweep plot beside it:
- per example at batch 1: parameters, forward FLOPs and inference latency (median ms per
  image), beside the paper's Table 8 and its ratios;
- the train step (the project's `make_train_step`) of MANGO, MANGO with remat per block, and
  each reference: FLOPs, lower and compile time, step time (median after warm-up, all timed in
  turn so load hits them alike), examples/s, achieved FLOP/s, peak memory, and the ratios;
- G's forward and inverse time and the round trip's error;
- a token-count sweep (tokens per modality, encoders reduced to their tokenizers, G and the
  transformer at `--sweep_blocks`): step time and peak memory against N;
- the issue's bars, met or not.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import importlib.metadata
import os
import platform
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from mango_jax import paper
from mango_jax.bench import report, subjects
from mango_jax.bench.timing import load_average, round_robin
from mango_jax.bench.xla import Memory
from mango_jax.model import token_counts

_CONFIG = config_flags.DEFINE_config_file("config", None, "MANGO experiment config file[:args].",
                                          lock_config=False)
_PRESET = flags.DEFINE_enum("preset", None, [*subjects.PRESETS, *subjects.CONFIG_PRESETS],
                            "Built-in setting, used when --config is not given.")
_OUT = flags.DEFINE_string("out", None, "JSON path (default benchmarks/<setting>_<platform>.json).")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed steps per measurement (median of these).")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps before them.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch of the timed steps (default: setting's).")
_DTYPE = flags.DEFINE_enum("compute_dtype", None, ["float32", "bfloat16"],
                           "Compute dtype (default: the setting's; benchmarks/gpu_bench.sh "
                           "passes bfloat16).")
_SWEEP = flags.DEFINE_list("sweep", None, "Tokens per modality of the sweep (default: setting's; "
                           "'none' skips it).")
_SWEEP_BLOCKS = flags.DEFINE_integer("sweep_blocks", None, "Flow blocks / transformer layers "
                                     "in the sweep (default: setting's).")
_REFERENCES = flags.DEFINE_list("references", None, "Fusions measured beside MANGO, each "
                                "`name` (at G's depth) or `name=params` (at MANGO's parameter "
                                "count); default: the setting's.")
_BLOCKS = flags.DEFINE_integer("num_blocks", None, "G's block count (default: setting's); "
                               "fewer blocks make a quick check of the whole command.")


def log(message: str) -> None:
    print(message, flush=True)


def _spec() -> subjects.Spec:
    if _CONFIG.value is not None:
        path = flags.FLAGS["config"].config_filename
        name = os.path.splitext(os.path.basename(path.split(":")[0]))[0]
        spec = subjects.from_experiment(_CONFIG.value, name)
    elif _PRESET.value in subjects.CONFIG_PRESETS:
        module = importlib.import_module(subjects.CONFIG_PRESETS[_PRESET.value])
        spec = subjects.from_experiment(module.get_config(), _PRESET.value)
    elif _PRESET.value is not None:
        spec = subjects.preset(_PRESET.value)
    else:
        raise app.UsageError(f"pass --config=experiments/<name>.py[:args] or "
                             f"--preset={'|'.join([*subjects.PRESETS, *subjects.CONFIG_PRESETS])}")
    if _BATCH.value:
        spec.batch_size = _BATCH.value
    if _DTYPE.value:
        spec.compute_dtype = _DTYPE.value
    if _SWEEP.value is not None:
        spec.sweep_tokens = () if _SWEEP.value == ["none"] else tuple(int(n) for n in _SWEEP.value)
    if _SWEEP_BLOCKS.value:
        spec.sweep_blocks = _SWEEP_BLOCKS.value
    if _REFERENCES.value is not None:
        spec.references = tuple(subjects.Reference.parse(r) for r in _REFERENCES.value)
    if _BLOCKS.value:
        spec.model.fusion.flow.num_blocks = _BLOCKS.value
    return spec


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(spec: subjects.Spec) -> dict:
    device = jax.devices()[0]
    gpu = device.platform == "gpu"
    versions = {p: importlib.metadata.version(p) for p in ("jax", "jaxlib", "flax", "optax")}
    return {
        "command": " ".join(["python -m experiments.bench", *sys.argv[1:]]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setting": spec.name,
        "device": {"platform": device.platform, "kind": device.device_kind,
                   "count": jax.device_count()},
        "gpu": ("measured on " + device.device_kind) if gpu else
               "no GPU was available to this run: every figure is from the CPU backend",
        "cpu": {"name": _cpu_name(), "cores": os.cpu_count()},
        "versions": versions,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "load_average": {"start": load_average()},
        "batch_size": spec.batch_size, "compute_dtype": spec.compute_dtype,
        "rounds": _ROUNDS.value, "warmup": _WARMUP.value,
        "dataset": {"name": spec.info.name, "task": spec.info.task,
                    "modalities": {m: list(spec.info.modality_shapes[m])
                                   for m in spec.modalities}},
        "model_config": spec.model.to_dict(),
        "notes": spec.notes,
        "definitions": {
            "flops": "XLA cost analysis of the compiled program, 2 per multiply-add, plus the "
                     "analytic cost of triangular solves (custom calls XLA does not count); "
                     "gmacs = gflops / 2. Remat's recomputation is included where it runs. "
                     "Counted on the program with G's scan unrolled (the cost analysis counts "
                     "a loop's body once); timed and compiled as configured.",
            "inference_ms": "median wall time of the batch-1 forward pass (inference, compute "
                            "dtype) of the model frozen for inference (nn.freeze, as "
                            "mango_jax.predict serves it), ms per image, as Table 8's latency",
            "step_time": "wall time of one call until every output is ready; median over "
                         "`rounds` calls after `warmup`; candidates timed in turn (round-robin)",
            "peak_memory": Memory.__doc__.split("\n\n")[1].replace("\n    ", " ").strip(),
            "achieved_gflops_per_s": "train_step_gflops / median step time",
            "model_gflops_per_s": "train-step GFLOP without remat / median step time (for "
                                  "mango_remat: mango's GFLOP over its own time)",
            "dispatch": "time until a call returned, before its outputs were ready: the host "
                        "cost of launching a step (an upper bound on CPU, where XLA may start "
                        "running the program before the call returns)",
        },
    }


def _copy_forward(record: dict) -> dict:
    keys = ("params_m", "params_m_by_part", "forward_gflops", "forward_gmacs", "inference",
            "inference_ms", "num_layers")
    return {k: record[k] for k in keys}


def reference_configs(spec: subjects.Spec, target_params: int) -> dict[str, tuple]:
    """`{name: (model config, depth record)}` of the setting's references; a 'params'
    reference gets the layer count that brings its parameter count nearest `target_params`."""
    blocks = spec.model.fusion.flow.num_blocks
    dense = spec.info.task in ("segmentation", "translation")
    out = {}
    for ref in spec.references:
        if ref.depth == "params":
            log(f"matching the depth of {ref.name} to MANGO's {target_params / 1e6:.1f}M "
                f"parameters")
            layers, params = subjects.matched_depth(spec.model, spec.info, spec.modalities,
                                                    ref.name, target_params, dense=dense,
                                                    homogeneous=spec.homogeneous)
            log(f"  {layers} layers, {params / 1e6:.1f}M parameters")
        else:
            layers = blocks
        config = subjects.reference_config(spec.model, ref.name, layers, dense=dense,
                                           homogeneous=spec.homogeneous)
        record = {"depth_rule": ref.depth, "num_layers": layers, "fusion": config.fusion.name}
        if "shared_weights" in config.fusion:
            record["shared_weights"] = bool(config.fusion.shared_weights)
        out[ref.name] = (config, record)
    return out


def measure_models(spec: subjects.Spec) -> dict:
    """Per-example accounting and inference latency, train steps of MANGO (with and without
    remat) and of the references, and G's inverse."""
    model = spec.model.copy_and_resolve_references()
    built = {}
    for name, remat in (("mango", False), ("mango_remat", True)):
        model.fusion.flow.remat = remat
        built[name] = model.copy_and_resolve_references()
    subs = {}
    for name, config in built.items():
        log(f"building {name}")
        subs[name] = subjects.Subject(config, spec.info, spec.modalities, spec.optimizer,
                                      compute_dtype=spec.compute_dtype)
    references = reference_configs(spec, subs["mango"].params["total"])
    for name, (config, _) in references.items():
        log(f"building {name}")
        subs[name] = subjects.Subject(config, spec.info, spec.modalities, spec.optimizer,
                                      compute_dtype=spec.compute_dtype)

    records, forwards = {}, {}
    single = {n: s for n, s in subs.items() if n != "mango_remat"}
    for name, sub in single.items():
        log(f"compiling the batch-1 forward pass of {name}")
        forwards[name] = sub.forward_program(sub.batch(1))
        records[name] = report.forward_record(sub.params, forwards[name])
    log(f"timing inference at batch 1 ({_WARMUP.value} + {_ROUNDS.value} rounds)")
    inference = round_robin({n: single[n].predictor(forwards[n], single[n].batch(1))
                             for n in single}, rounds=_ROUNDS.value, warmup=_WARMUP.value)
    for name in single:
        records[name].update(report.inference_record(forwards[name], inference[name]))
        if name in references:
            records[name].update(references[name][1])
    records["mango"]["num_layers"] = spec.model.fusion.flow.num_blocks
    records["mango_remat"] = _copy_forward(records["mango"])
    del forwards
    gc.collect()

    batch = subs["mango"].batch(spec.batch_size)
    programs = {}
    for name, sub in subs.items():
        log(f"compiling the train step of {name}")
        programs[name] = sub.train_program(batch)
        log(f"  {programs[name].compile_s:.1f} s, {report.fmt(programs[name].flops / 1e9)} "
            f"GFLOP, peak {programs[name].memory.peak / report.MIB:,.0f} MiB")

    load_before = load_average()
    log(f"timing train steps ({_WARMUP.value} + {_ROUNDS.value} rounds, load {load_before})")
    timings = round_robin({n: subs[n].stepper(programs[n], batch) for n in subs},
                          rounds=_ROUNDS.value, warmup=_WARMUP.value)
    for name in subs:
        model_flops = programs["mango"].flops if name == "mango_remat" else None
        records[name].update(report.train_record(programs[name], timings[name], spec.batch_size,
                                                 model_flops=model_flops))
    del programs
    gc.collect()

    log("compiling G and G⁻¹")
    forward, inverse, params, x = subs["mango"].flow_programs(spec.batch_size)
    z, logdet = forward.compiled(params, x)
    x_rec, logdet_inv = inverse.compiled(params, z)
    error = float(np.linalg.norm(np.asarray(x_rec, np.float64) - np.asarray(x, np.float64))
                  / np.linalg.norm(np.asarray(x, np.float64)))
    flow_times = round_robin({"forward": lambda: forward.compiled(params, x),
                              "inverse": lambda: inverse.compiled(params, z)},
                             rounds=_ROUNDS.value, warmup=_WARMUP.value)
    flow_config = spec.model.fusion.flow
    inverse_record = {
        "size": {"batch_size": spec.batch_size, "tokens": list(subs["mango"].tokens),
                 "dim": subs["mango"].dim, "num_blocks": flow_config.num_blocks,
                 "num_heads": flow_config.num_heads, "dtype": spec.compute_dtype},
        "forward": {**flow_times["forward"].as_dict(), "gflops": forward.flops / 1e9,
                    "compile_s": forward.compile_s},
        "inverse": {**flow_times["inverse"].as_dict(), "gflops": inverse.flops / 1e9,
                    "compile_s": inverse.compile_s},
        "inverse_over_forward": flow_times["inverse"].median / flow_times["forward"].median,
        "relative_reconstruction_error": error,
        "max_logdet_mismatch": float(np.max(np.abs(np.asarray(logdet) + np.asarray(logdet_inv)))),
    }
    records = {name: records[name] for name in subs}
    ratios = {f"mango / {name}": report.ratios(records["mango"], records[name])
              for name in references}
    if "transformer" in references:
        ratios["mango_remat / transformer"] = report.ratios(records["mango_remat"],
                                                            records["transformer"])
    ratios["mango_remat / mango"] = report.ratios(records["mango_remat"], records["mango"])
    out = {"train": records, "references": {n: r for n, (_, r) in references.items()},
           "ratios": ratios, "inverse": inverse_record, "load_before_timing": load_before}
    if (spec.info.name == subjects.TABLE8_DATASET
            and spec.info.modality_shapes["rgb"][:2] == (256, 256)):
        # The paper's Table 8 (mango_jax.paper): parameters (M), GFLOPs, inference ms.
        out["table8"] = paper.table8_costs()
        out["table8_ratios"] = report.table8_ratios(out["table8"])
    return out


def measure_sweep(spec: subjects.Spec) -> dict:
    """Train-step time and peak memory of MANGO and the transformer for each token count."""
    points = []
    for tokens in spec.sweep_tokens:
        info, model = subjects.with_tokens(spec.info, spec.modalities, spec.model, tokens)
        model.fusion.flow.update(num_blocks=spec.sweep_blocks, remat=False)
        configs = {"mango": model, "transformer": subjects.transformer_config(model)}
        subs = {n: subjects.Subject(c, info, spec.modalities, spec.optimizer,
                                    compute_dtype=spec.compute_dtype) for n, c in configs.items()}
        batch = subs["mango"].batch(spec.batch_size)
        programs = {n: s.train_program(batch) for n, s in subs.items()}
        log(f"sweep N={tokens}: compiled, timing (load {load_average()})")
        timings = round_robin({n: subs[n].stepper(programs[n], batch) for n in subs},
                              rounds=_ROUNDS.value, warmup=_WARMUP.value)
        point = {"tokens_per_modality": tokens}
        for name in subs:
            point[name] = {"params_m": subs[name].params["total"] / 1e6,
                           **report.train_record(programs[name], timings[name],
                                                 spec.batch_size)}
        log(f"  mango {point['mango']['step']['median_ms']:,.0f} ms "
            f"{point['mango']['peak_mib']:,.0f} MiB | transformer "
            f"{point['transformer']['step']['median_ms']:,.0f} ms "
            f"{point['transformer']['peak_mib']:,.0f} MiB")
        points.append(point)
        del subs, programs
        gc.collect()
    return {"num_blocks": spec.sweep_blocks, "latent_model": False,
            "note": "encoders reduced to their tokenizers; images resized to an h x w patch "
                    "grid with h * w = N", "points": points}


def bars(results: dict, spec: subjects.Spec) -> list[dict]:
    """The issue's figures for every reference this run measured, met or not."""
    train, inv, ratios = results["train"], results["inverse"], results["ratios"]
    blocks = spec.model.fusion.flow.num_blocks
    out = []
    if "mango / geminifusion" in ratios and "table8" in results:
        paper = results["table8_ratios"]["mango / geminifusion"]["inference_ms"]
        out.append(report.bar(
            "inference ms per image, MANGO / GeminiFusion", ratios["mango / geminifusion"]
            ["inference_ms"], round(paper, 2), at_most=True,
            note=f"batch 1; the paper's ratio 144 / 153; GeminiFusion at "
                 f"{results['references']['geminifusion']['num_layers']} layers"))
    if "mango / cross_attention" in ratios:
        ratio = ratios["mango / cross_attention"]
        compile_note = (f"compile s: MANGO {report.fmt(train['mango']['compile_s'])}, "
                        f"cross-attention {report.fmt(train['cross_attention']['compile_s'])}")
        out.append(report.bar("train step time, MANGO / cross-attention", ratio["step_ms"],
                              2.0, at_most=True, note=f"equal depth {blocks}; {compile_note}"))
        out.append(report.bar("train step FLOP/s, MANGO / cross-attention",
                              ratio["achieved_gflops_per_s"], 0.7,
                              note=f"equal depth {blocks}"))
    if "mango / transformer" in ratios:
        ratio = ratios["mango / transformer"]
        out.append(report.bar("train step FLOP/s, MANGO / transformer (whole model)",
                              ratio["achieved_gflops_per_s"], 0.85, note="no remat"))
        out.append(report.bar("train step compile time, MANGO / transformer",
                              ratio["compile_s"], 2.0, at_most=True))
    out.append(report.bar("G inverse time / G forward time", inv["inverse_over_forward"], 1.3,
                          at_most=True, note=f"L={blocks}, D={inv['size']['dim']}, "
                          f"N={sum(inv['size']['tokens'])}"))
    peak, peak_remat = train["mango"]["peak_mib"], train["mango_remat"]["peak_mib"]
    out.append(report.bar("train step peak memory saved by remat", 1.0 - peak_remat / peak, 0.5,
                          note=f"L={blocks}"))
    return out


def subjects_tokens(spec: subjects.Spec) -> int:
    """Tokens per modality the setting's model sees (the sweep point that matches it)."""
    return token_counts(spec.model, spec.info, spec.modalities)[0]


def print_tables(results: dict) -> None:
    train = results["train"]
    names = list(train)
    if "table8" in results:
        t8, paper_ratios = results["table8"], results["table8_ratios"]
        ours = [n for n in ("mango", "geminifusion", "tokenfusion") if n in train]
        log("\nTable 8 beside ours (batch 1; the paper's GFLOPs are multiply-adds):")
        log(report.table(
            ["", *(f"{n} (ours)" for n in ours), "T8 MANGO", "T8 GeminiFusion",
             "T8 TokenFusion"],
            [["fusion layers", *(train[n]["num_layers"] for n in ours), None, None, None],
             *([label, *(train[n][key] for n in ours),
                *(t8[m][its] for m in ("MANGO", "GeminiFusion", "TokenFusion"))]
               for (key, its), label in zip(report.TABLE8_FIGURES,
                                            ("params (M)", "forward GMACs", "inference ms"),
                                            strict=True)),
             ["forward GFLOP (2/MAC)", *(train[n]["forward_gflops"] for n in ours),
              None, None, None]]))
        pairs = [k for k in paper_ratios if k in results["ratios"]]
        log(report.table(
            ["ratio", *(f"{k} ours" for k in pairs), *(f"{k} paper" for k in pairs)],
            [[label, *(results["ratios"][k][key] for k in pairs),
              *(paper_ratios[k][key] for k in pairs)]
             for (key, _), label in zip(report.TABLE8_RATIO_KEYS,
                                        ("params", "forward GFLOPs", "inference ms"),
                                        strict=True)]))
    meta = results["meta"]
    log(f"\nTrain step, batch {meta['batch_size']}, {meta['compute_dtype']}, "
        f"{meta['device']['kind']} ({meta['cpu']['cores']} cores):")
    rows = [["fusion layers", *(train[n].get("num_layers") for n in names)]]
    for key, label in report.RATIO_KEYS:
        rows.append([label, *(report.figure(train[n], key) for n in names)])
    rows.insert(7, ["step ms (min)", *(train[n]["step"]["min_ms"] for n in names)])
    rows.insert(8, ["dispatch ms", *(train[n]["step"]["dispatch_median_ms"] for n in names)])
    rows.append(["lower s", *(train[n]["lower_s"] for n in names)])
    log(report.table(["", *names], rows))
    pairs = list(results["ratios"])
    log(report.table(["ratio", *pairs],
                     [[label, *(results["ratios"][p][key] for p in pairs)]
                      for key, label in report.RATIO_KEYS]))
    inv = results["inverse"]
    log(f"\nG (L={inv['size']['num_blocks']}, D={inv['size']['dim']}, "
        f"N={sum(inv['size']['tokens'])}, batch {inv['size']['batch_size']}):")
    log(report.table(["", "forward", "inverse"],
                     [["median ms", inv["forward"]["median_ms"], inv["inverse"]["median_ms"]],
                      ["GFLOP", inv["forward"]["gflops"], inv["inverse"]["gflops"]],
                      ["compile s", inv["forward"]["compile_s"], inv["inverse"]["compile_s"]]]))
    log(f"inverse / forward {inv['inverse_over_forward']:.2f}; relative reconstruction error "
        f"{inv['relative_reconstruction_error']:.1e}")
    if "sweep" in results:
        sweep = results["sweep"]
        log(f"\nToken sweep (blocks: {sweep['num_blocks']}, tokenizer-only encoders):")
        log(report.table(
            ["N", "MANGO ms", "transformer ms", "ratio", "MANGO MiB", "transformer MiB",
             "MANGO GFLOP/s", "transformer GFLOP/s"],
            [[str(p["tokens_per_modality"]), p["mango"]["step"]["median_ms"],
              p["transformer"]["step"]["median_ms"],
              p["mango"]["step"]["median_ms"] / p["transformer"]["step"]["median_ms"],
              p["mango"]["peak_mib"], p["transformer"]["peak_mib"],
              p["mango"]["achieved_gflops_per_s"], p["transformer"]["achieved_gflops_per_s"]]
             for p in sweep["points"]]))
    log("\nBars:")
    log(report.table(["", "value", "target", "met", "note"],
                     [[b["name"], b["value"], b["target"], b["met"], b["note"]]
                      for b in results["bars"]]))
    log(f"\nload average: {meta['load_average']}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    spec = _spec()
    if _ROUNDS.value < 10:
        log(f"warning: --rounds={_ROUNDS.value}; the issue asks for the median of at least 10")
    results = {"meta": _meta(spec)}
    log(f"bench {spec.name} on {results['meta']['device']['kind']}; "
        f"load {results['meta']['load_average']['start']}")
    results.update(measure_models(spec))
    results["meta"]["load_average"]["before_timing"] = results.pop("load_before_timing")
    if spec.sweep_tokens:
        results["sweep"] = measure_sweep(spec)
    results["meta"]["load_average"]["end"] = load_average()
    results["bars"] = bars(results, spec)
    device = results["meta"]["device"]
    peak = report.gpu_peak_tflops(device["kind"]) if device["platform"] == "gpu" else None
    if peak is not None:
        results["gpu_bf16_peak_fraction"] = {
            n: r["achieved_gflops_per_s"] / (1e3 * peak) for n, r in results["train"].items()}
    print_tables(results)
    out = _OUT.value or os.path.join(
        "benchmarks", f"{spec.name}_{results['meta']['device']['platform']}.json")
    report.write_json(out, results)
    log(f"\nwrote {out}")
    if spec.sweep_tokens:
        plot = os.path.splitext(out)[0] + "_sweep.png"
        report.plot_sweep(results["sweep"]["points"], plot,
                          f"{spec.name}: train step vs tokens per modality "
                          f"(blocks: {spec.sweep_blocks}, {results['meta']['device']['kind']})")
        log(f"wrote {plot}")


if __name__ == "__main__":
    cli.run(main)
