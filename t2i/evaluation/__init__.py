"""Evaluation: the shapes judge (prompt fidelity from pixels), tokenizer reconstruction, and
CLIP's zero-shot accuracy and retrieval."""

from t2i.evaluation.judge import find_objects, judge, judge_many, prompt_fidelity
from t2i.evaluation.reconstruction import psnr, reconstruction_report
from t2i.evaluation.zero_shot import retrieval_recall, zero_shot_accuracy

__all__ = [
    "find_objects",
    "judge",
    "judge_many",
    "prompt_fidelity",
    "psnr",
    "reconstruction_report",
    "retrieval_recall",
    "zero_shot_accuracy",
]
