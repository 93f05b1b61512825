"""Evaluation: the shapes judge (prompt fidelity from pixels)."""

from t2i.evaluation.judge import find_objects, judge, judge_many, prompt_fidelity

__all__ = ["find_objects", "judge", "judge_many", "prompt_fidelity"]
