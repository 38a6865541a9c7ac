"""Run directories are claimed atomically and given back only as claimed (experiments.rundirs)."""

import json
import os
import threading

import pytest

from experiments.rundirs import CLAIM, Refused, claim, release


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


def test_release_gives_back_only_what_the_claim_and_hydra_made(tmp_path):
    new = tmp_path / "new"
    claim(new, "hydra.run.dir")
    (new / ".hydra").mkdir()
    (new / "run.log").write_text("the refusal")
    assert release(new) and not new.exists()  # the claim created it: removed

    old = tmp_path / "old"  # an empty directory the user made (e.g. the shell's cwd)
    old.mkdir()
    claim(old, "hydra.run.dir")
    (old / "run.log").write_text("")
    assert release(old) and old.is_dir() and not list(old.iterdir())  # kept, emptied
    claim(old, "hydra.run.dir")  # the corrected command may claim it again

    used = tmp_path / "used"
    claim(used, "hydra.run.dir")
    (used / "results.csv").write_text("rows")  # the run wrote something of its own
    assert not release(used) and (used / CLAIM).exists()

    other = tmp_path / "other"
    claim(other, "hydra.run.dir")
    record = json.loads((other / CLAIM).read_text())
    (other / CLAIM).write_text(json.dumps({**record, "pid": record["pid"] + 1}))
    assert not release(other) and (other / CLAIM).exists()  # another process's claim
