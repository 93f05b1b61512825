"""The console scripts that need a step before their module is imported.

`t2i-train` is `python -m t2i.train`: its command line is checked (t2i.cli, torch-free)
before t2i.train's heavy imports, as `python -m` does through t2i.train's own
`__main__` guard; `t2i-evaluate` checks its paths the same way. It lives here, above the
training CLI, because t2i.cli is read by the data command lines, which may not import a
trainer.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

from t2i.cli import precheck_evaluate, precheck_train


def train() -> int:
    """`t2i-train CONFIG [overrides]`: refused in a fraction of a second when the command
    line or the run folder is wrong, then trained by `t2i.train.main`."""
    source = Path(importlib.util.find_spec("t2i.train").origin).read_text()
    precheck_train(sys.argv[1:], ast.get_docstring(ast.parse(source), clean=False))
    from t2i.train import main

    return main()


def evaluate() -> int:
    """`t2i-evaluate MODEL ...`: wrong paths refused in a fraction of a second, then
    `t2i.evaluate.main`."""
    precheck_evaluate(sys.argv[1:])
    from t2i.evaluate import main

    return main()
