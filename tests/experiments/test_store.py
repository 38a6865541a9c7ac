"""The results store: round trips, run records, queries with pandas and SQL, damaged files."""

import json

import pandas as pd
import pytest

from evaluation.results import COLUMNS, Row, rows_frame
from experiments.store import RUN_COLUMNS, UNIT_COLUMNS, ResultStore


def rows(run: str, method: str, value: float) -> list[Row]:
    return [
        Row(run, "sandbox2", "sandbox_clip", method, json.dumps({"alpha": a}), task, split,
            metric, value + a)
        for a in (0.5, 1.0) for task in ("digits", "average") for split in ("val", "test")
        for metric in ("accuracy", "normalized_accuracy")
    ]  # fmt: skip


CONFIG = {"model": {"name": "sandbox_clip", "recipe": {"seed": 0}}, "method": {"ta": {"fn": "x"}}}


def test_a_unit_round_trips_with_its_config(tmp_path):
    store = ResultStore(tmp_path)
    written = rows("r1", "Task arithmetic", 50.0)
    store.put("k1", "ta", written, CONFIG, "code1")
    got = store.get("k1")
    assert list(got.columns) == list(UNIT_COLUMNS)
    pd.testing.assert_frame_equal(got[list(COLUMNS)], rows_frame(written), check_dtype=False)
    assert set(got.unit) == {"ta"} and set(got.unit_key) == {"k1"}
    assert json.loads(got.config.iloc[0]) == CONFIG and set(got.code_version) == {"code1"}
    assert str(got.created.dtype).startswith("datetime64") and got.value.dtype == "float64"
    assert store.get("absent") is None


def test_writes_leave_no_temporary_files_and_refuse_empty_units(tmp_path):
    store = ResultStore(tmp_path)
    store.put("k1", "ta", rows("r1", "TA", 1.0), CONFIG, "c")
    assert [p.name for p in (tmp_path / "units").iterdir()] == ["k1.parquet"]
    with pytest.raises(ValueError, match="unit 'ta' has no rows"):
        store.put("k2", "ta", [], CONFIG, "c")


def test_results_hold_every_unit_once_and_filter_by_run_directory(tmp_path):
    store = ResultStore(tmp_path / "store")
    store.put("k1", "ta", rows("r1", "TA", 1.0), CONFIG, "c")
    store.put("k2", "ties", rows("r1", "TIES", 2.0), CONFIG, "c")
    store.put("k3", "ta", rows("r3", "TA", 3.0), CONFIG, "c")
    sweep = tmp_path / "multiruns" / "s1"
    store.record_run("r1", sweep / "0", {"ta": "k1", "ties": "k2"})
    store.record_run("r2", sweep / "1", {"ta": "k1"}, reused={"ta"})
    store.record_run("r3", tmp_path / "runs" / "x", {"ta": "k3"})
    assert sorted(store.results().unit_key.unique()) == ["k1", "k2", "k3"]
    assert len(store.results()) == 3 * len(rows("r", "m", 0))
    assert sorted(store.results([sweep]).unit_key.unique()) == ["k1", "k2"]
    assert sorted(store.results([sweep / "1"]).unit_key.unique()) == ["k1"]
    runs = store.runs()
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert runs[runs.run == "r2"].reused.tolist() == [True]


def test_recording_a_run_again_replaces_its_record(tmp_path):
    store = ResultStore(tmp_path)
    store.record_run("r", tmp_path / "run", {"ta": "k1"})
    store.record_run("r", tmp_path / "run", {"ta": "k1", "ties": "k2"})
    assert sorted(store.runs().unit) == ["ta", "ties"]


def test_pandas_and_sql_read_the_same_rows(tmp_path):
    store = ResultStore(tmp_path)
    store.put("k1", "ta", rows("r1", "TA", 1.0), CONFIG, "c")
    store.put("k2", "ties", rows("r1", "TIES", 2.0), CONFIG, "c")
    direct = pd.read_parquet(tmp_path / "units")  # the store is plain Parquet
    assert len(direct) == len(store.results())
    query = ("SELECT method, avg(value) AS v FROM results WHERE split='test' AND "
             "task='average' AND metric='accuracy' GROUP BY method ORDER BY method")  # fmt: skip
    by_sql = store.sql(query)
    frame = store.results()
    test = frame[(frame.split == "test") & (frame.task == "average") & (frame.metric == "accuracy")]
    expected = test.groupby("method").value.mean()
    assert by_sql.set_index("method").v.to_dict() == pytest.approx(expected.to_dict())
    assert store.sql("SELECT count(*) AS n FROM runs").n.iloc[0] == 0  # no run recorded yet


def test_a_damaged_unit_file_counts_as_absent_with_a_warning(tmp_path):
    store = ResultStore(tmp_path)
    store.put("k1", "ta", rows("r1", "TA", 1.0), CONFIG, "c")
    store.put("k2", "ta", rows("r1", "TA", 1.0), CONFIG, "c")
    (tmp_path / "units" / "k1.parquet").write_bytes(b"not parquet")
    with pytest.warns(UserWarning, match="k1.parquet"):
        assert store.get("k1") is None
    with pytest.warns(UserWarning, match="k1.parquet"):
        assert set(store.results().unit_key) == {"k2"}


def test_temporaries_of_a_killed_writer_are_not_read(tmp_path):
    store = ResultStore(tmp_path)
    store.put("k1", "ta", rows("r1", "TA", 1.0), CONFIG, "c")
    (tmp_path / "units" / ".k2.parquet.999999.abc.tmp").write_bytes(b"half")
    assert set(store.results().unit_key) == {"k1"}
    assert len(pd.read_parquet(tmp_path / "units")) == len(rows("r", "m", 0))


def test_a_store_that_cannot_be_created_is_refused_naming_the_option(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="store_dir=.*a_file/store.*cannot be created"):
        ResultStore(blocker / "store").check_writable("store_dir")
    ResultStore(tmp_path / "fine").check_writable("store_dir")
    assert (tmp_path / "fine" / "units").is_dir()


def test_report_inputs_skip_a_sweeps_multirun_yaml_and_name_a_bad_file(tmp_path) -> None:
    from evaluation.results import read_rows, write_rows
    from experiments.report import result_files

    job = tmp_path / "0"
    job.mkdir()
    write_rows([], job / "results.csv")
    (tmp_path / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n  a: b, c\n")
    assert result_files(sorted(tmp_path.iterdir())) == [job / "results.csv"]
    bad = tmp_path / "notes.csv"
    bad.write_bytes(b"a\n1,2,3\n")
    with pytest.raises(ValueError, match="notes.csv: not a mergelab results file"):
        read_rows(bad)
