"""Shared test set-up: this folder is importable, so tests can use `model_checks`."""
