"""benchmarks/sbc.py keeps the replicates it has written: resuming or summarising with other
sampler settings stops with a message and leaves the results file as it was (it used to
delete it, rows of a run in progress included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_resume_returns_rows_of_the_same_run_and_never_deletes_another(tmp_path):
    import sbc

    partial = tmp_path / "sbc_x.partial.jsonl"
    assert sbc._resume(partial, "NUTS a", 1) == []  # no file yet
    rows = [{"method": "NUTS a", "seed": 1}, {"replicate": 0}, {"replicate": 3}]
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = partial.read_bytes()
    assert sbc._resume(partial, "NUTS a", 1) == rows[1:]
    for method, seed in (("NUTS b", 1), ("NUTS a", 2)):
        with pytest.raises(SystemExit, match="give the same --method"):
            sbc._resume(partial, method, seed)
        assert partial.read_bytes() == before
