"""Pieces of the speed and memory benchmark (`python -m experiments.bench`).

xla: FLOPs (with triangular solves counted), memory and build time of a compiled program.
timing: round-robin wall-clock timing for a shared, loaded machine; the load average.
subjects: the settings (presets or an experiment config), the reference fusions (depth equal to
  G's or matched to MANGO's parameter count), synthetic inputs, and `Subject`, one model with
  the project's train step.
report: records, ratios (Table 8's own among them), the issue's bars, text tables, the JSON file
  and the sweep plot.
"""
