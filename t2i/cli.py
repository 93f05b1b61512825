"""What t2i's command lines share, light enough to import before anything heavy: a parser
whose errors are one line (no usage dump), and value types that name what they refuse, so a
bad flag is refused before torch is imported."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _number(text: str, whole: bool) -> float | int:
    try:
        return int(text) if whole else float(text)
    except ValueError:
        kind = "whole number" if whole else "number"
        raise argparse.ArgumentTypeError(f"{text!r} is not a {kind}") from None


def finite(text: str) -> float:
    """A finite number >= 0 (a guidance scale, a temperature)."""
    value = _number(text, whole=False)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number >= 0")
    return value


def at_least(low: int) -> Callable[[str], int]:
    """A whole number >= low."""

    def parse(text: str) -> int:
        value = _number(text, whole=True)
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: must be a whole number >= {low}")
        return value

    return parse


def fraction(open_below: bool) -> Callable[[str], float]:
    """A number in (0, 1] (open_below) or in [0, 1]."""

    def parse(text: str) -> float:
        value = _number(text, whole=False)
        if not (0 < value <= 1 if open_below else 0 <= value <= 1):
            span = "(0, 1]" if open_below else "[0, 1]"
            raise argparse.ArgumentTypeError(f"{text}: must be a number in {span}")
        return value

    return parse
