"""scripts/probe_inputs.py: its cases run as processes and its table reports what each
answered (the figures of docs/BENCHMARKS.md, "Bad input")."""

from __future__ import annotations

from conftest import load_script

probe = load_script("probe_inputs")


def test_the_probe_table_reports_each_cases_exit_status_and_named_value(capsys):
    assert probe.main(["--only", "0", "4"]) == 0
    rows = [
        r
        for r in capsys.readouterr().out.splitlines()
        if r.startswith("| 0 ") or r.startswith("| 4 ")
    ]
    assert len(rows) == 2
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [c[3] for c in cells] == ["2", "2"]  # the exit status of a refused input
    assert "not UTF-8 text (byte 0xe9 at offset 5, line 1)" in cells[0][5]
    assert "train.ema_decay=1.5 must be null or in [0, 1)" in cells[1][5]
    assert "TMP/latin.yaml" in cells[0][2]  # the temporary folder is not shown
