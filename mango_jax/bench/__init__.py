"""Pieces of the speed and memory benchmark (`python -m experiments.bench`).

xla: FLOPs (with triangular solves counted), memory and build time of a compiled program.
timing: round-robin wall-clock timing for a shared, loaded machine; the load average.
subjects: the settings (presets or an experiment config), the transformer baseline, synthetic
  inputs, and `Subject`, one model with the project's train step.
report: records, ratios, the issue's bars, text tables, the JSON file and the sweep plot.
"""
