"""The runs table: written at the flush after a run changes; ended runs are not kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinytelem.trace.reader import open_trace
from tinytelem.trace.writer import TraceWriter


def test_runs_are_written_in_place_and_ended_ones_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "runs.h5"
    with TraceWriter.create(path, attrs={}) as w:
        for run_id in range(1, 201):
            w.update_run(run_id, n_prompt=3, begin_s=float(run_id))
            w.flush()
            w.update_run(run_id, status=0, n_generated=run_id, end_s=run_id + 0.5)
            w.flush()
        assert w._run_pos == {} and w._runs == {}  # nothing grows with the number of runs
        w.update_run(300)  # open, not ended: remembered
        w.flush()
        assert list(w._run_pos) == [300]
        w.update_run(5, n_generated=99)  # an ended run changed again: found on disk
        w.update_run(250, status=1)  # a run that began out of order
        assert w.statistics().rows["runs"] == 202
    with open_trace(path) as tr:
        runs = tr.runs
    assert runs.size == 202
    assert np.all(np.diff(runs["run_id"].astype(np.int64)) > 0)  # read back sorted
    by_id = {int(r["run_id"]): r for r in runs}
    assert by_id[5]["n_generated"] == 99 and by_id[5]["status"] == 0
    assert by_id[200]["n_generated"] == 200 and by_id[300]["status"] == -1
    assert by_id[250]["status"] == 1
