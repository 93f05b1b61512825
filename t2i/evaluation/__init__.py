"""Evaluation: the shapes judge (prompt fidelity from pixels) and tokenizer reconstruction."""

from t2i.evaluation.judge import find_objects, judge, judge_many, prompt_fidelity
from t2i.evaluation.reconstruction import psnr, reconstruction_report

__all__ = [
    "find_objects",
    "judge",
    "judge_many",
    "prompt_fidelity",
    "psnr",
    "reconstruction_report",
]
