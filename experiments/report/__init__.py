r"""Collects runs' `results.json` and writes the paper's tables with our numbers beside its own.

    python -m experiments.report --workdirs='runs/*' --out=report/
    python -m experiments.report --workdirs=runs/nyu_mango,runs/nyu_glow,runs/sun_mango

`--workdirs` takes workdirs, `results.json` files or glob patterns, comma-separated; a match
without a `results.json` is skipped with a warning. `--out` gets one Markdown and one CSV file
per table plus `report.md`, which holds them all:

| file                      | the paper's table                                              |
|---------------------------|----------------------------------------------------------------|
| table1_segmentation       | 1: NYUDv2 + SUN RGB-D segmentation, prior methods and MANGO    |
| table2_taskonomy          | 2: Taskonomy image-to-image translation                        |
| table3_mmimdb             | 3: MM-IMDB movie-genre classification                          |
| table4_flow_layer         | 4: invertible layer ablation (RealNVP, Glow, Flow++, AttnFlow) |
| table5_partitions         | 5: partition ablation (MMCA, +IMCA, +LICA)                     |
| table6_blocks_latent      | 6 (+ appendix Table 7's 16 blocks): blocks x latent model      |
| table8_cost               | 8 (appendix): parameters, GFLOPs, inference time               |
| runs                      | every run with its settings and all its metrics                |

Reading a run: `results.json` is a `mango_jax.results.Results` (files of older schemas are
migrated as they are read, `mango_jax.migrate`); metric values are fractions. A run's flow
layer, blocks and partitions are what its fusion method describes (`meta.fusion_details`), a
baseline's blocks its config's `num_layers`. Our number in a paper table is the run's 'test'
split, or its 'val' split where it has no 'test'; fractions are printed as percentages where
the paper prints them, KID ×100 and MAE / MSE ×10 (the paper's "×10^-2" / "×10^-1" units).
Several runs that land in one cell (seeds) are averaged and printed as mean±std. A cell of ours
stays empty where no run fits it; the paper's cell stays empty where the paper has no number.

Which runs fill which rows:
- A baseline fills the paper's row of its fusion method (`meta.fusion`, the registry name);
  where the paper has several rows of one method (TokenFusion Tiny / Small), `meta.variant`
  picks one, and a run without it gets its own row. Unimodal runs are told apart by the
  modality they keep (`model.fusion.modality` of `meta.config`).
- MANGO fills the main-comparison rows (Tables 1-3, 8) only in the paper's configuration
  (`mango_jax.paper.MAIN_CONFIG`: flow layer 'mango', 12 blocks, partitions MMCA+IMCA+LICA,
  latent model on). Each ablation table holds the other settings at that configuration and
  varies its own: Table 4 the flow layer, Table 5 the partitions, Table 6 blocks and latent
  model. Settings the paper does not list get extra rows of ours alone; runs that fit no table
  still appear in `runs`.

The code: `load` finds and reads the runs, `tables` builds the tables (`tables.TABLES`; the
paper's numbers are `mango_jax.paper`), `render` writes them. Another file of a run's workdir
(e.g. a robustness evaluation's) is read in `load.load_runs` into a field of `load.Run`, and its
table is one more function in `tables.TABLES`.
"""

from __future__ import annotations

from collections.abc import Iterable

from absl import app, flags

from experiments.report import load, render, tables


def write_report(patterns: Iterable[str], out: str) -> list[tables.Table]:
    """Reads the runs, writes every table as `.md` and `.csv` and `report.md` under `out`."""
    runs, skipped = load.load_runs(patterns)
    built = tables.build_tables(runs)
    render.write(built, out, num_runs=len(runs), skipped=skipped)
    return built


def define_flags(flag_values=flags.FLAGS) -> None:
    flags.DEFINE_list("workdirs", None, "Workdirs, results.json files or glob patterns.",
                      flag_values=flag_values)
    flags.DEFINE_string("out", "report", "Output directory.", flag_values=flag_values)
    flags.mark_flag_as_required("workdirs", flag_values=flag_values)


def main(argv, flag_values=flags.FLAGS) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    built = write_report(flag_values.workdirs, flag_values.out)
    print(f"wrote {len(built)} tables and report.md to {flag_values.out}")
