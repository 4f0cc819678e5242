"""Experiment entry points (`python -m experiments.main`) and one config file per experiment."""
