"""Run directories are claimed atomically (experiments.callbacks.claim)."""

import json
import os
import threading

import pytest

from experiments.callbacks import CLAIM, Refused, claim


def test_of_runs_claiming_one_directory_together_exactly_one_wins(tmp_path):
    won, refused = [], []

    def attempt():
        try:
            won.append(claim(tmp_path / "run", "hydra.run.dir"))
        except Refused as e:
            refused.append(str(e))

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won == [tmp_path / "run" / CLAIM] and len(refused) == 15
    record = json.loads(won[0].read_text())
    assert record["pid"] == os.getpid() and {"host", "time", "command"} <= set(record)
    assert all(r.startswith(f"hydra.run.dir={tmp_path / 'run'}: ") for r in refused)


def test_a_file_in_the_way_is_refused_naming_the_key(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(Refused, match="hydra.sweep.dir=.*: it is not a directory"):
        claim(tmp_path / "f", "hydra.sweep.dir")
