"""The results store: the rows of every run in one place, in long format, for pandas or SQL.

Every run appends to one store (``store_dir``, default ``outputs/store``), a directory of
Parquet files:

* ``units/<key>.parquet``: the rows of one *unit* (a method under one resolved config),
  written once by the run that computed them. ``key`` is the digest of what determines
  the rows (:func:`experiments.run.unit_key`: zoo, benchmark, protocol, the method's config
  and those it depends on, the device type, the code that computes rows), so a unit found here
  is complete and is reused, never recomputed (resume), whatever the run's directory.
  Columns: the long format of ``results.csv`` (:data:`evaluation.results.COLUMNS`) plus
  ``unit`` (the config key, ``method.<unit>``), ``unit_key``, ``config`` (JSON of the
  config that the key digests), ``code_version`` and ``created`` (UTC).
* ``runs/<run id>.parquet``: which units each run used (``run``, ``run_dir``, ``unit``,
  ``unit_key``, ``reused``, ``recorded``); the id is a digest of the run directory.

Each file is written to a temporary name and renamed (a reader sees it whole or not at all)
and no two runs write the same file, except two jobs computing the same unit at once, which
write equivalent rows (the last rename wins): concurrent jobs (joblib, SLURM arrays) append
without a lock. Query with pandas (``pd.read_parquet("outputs/store/units")``,
:meth:`ResultStore.results`) or SQL (:meth:`ResultStore.sql`, DuckDB: views ``results``
and ``runs``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from evaluation.cache import atomic_path, json_digest
from evaluation.results import COLUMNS, Row, rows_frame

UNIT_COLUMNS = (*COLUMNS, "unit", "unit_key", "config", "code_version", "created")
RUN_COLUMNS = ("run", "run_dir", "unit", "unit_key", "reused", "recorded")


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def _schema(columns: Iterable[str]) -> Any:
    import pyarrow as pa

    types = {"value": pa.float64(), "created": pa.timestamp("us", tz="UTC"),
             "recorded": pa.timestamp("us", tz="UTC"), "reused": pa.bool_()}  # fmt: skip
    return pa.schema([(c, types.get(c, pa.string())) for c in columns])


def _write(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> Path:
    """Write ``frame`` as Parquet with a fixed schema, through a temporary file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame[list(columns)], schema=_schema(columns),
                                 preserve_index=False)  # fmt: skip
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _read(files: Iterable[Path], columns: tuple[str, ...]) -> pd.DataFrame:
    """Concatenate Parquet files; an unreadable one (disk fault, foreign file) is skipped
    with a warning naming it."""
    frames = []
    for file in files:
        try:
            frames.append(pd.read_parquet(file))
        except Exception as err:  # pyarrow raises several types for a damaged file
            warnings.warn(f"results store: skipping unreadable {file} ({err})", stacklevel=3)
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)[list(columns)]


class ResultStore:
    """The store under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.units_dir = self.root / "units"
        self.runs_dir = self.root / "runs"

    def check_writable(self, option: str) -> None:
        """Create the store's directories; ``ValueError`` naming ``option`` and the path if
        they cannot be (a file in the way, no permission)."""
        try:
            for directory in (self.units_dir, self.runs_dir):
                directory.mkdir(parents=True, exist_ok=True)
                if not os.access(directory, os.W_OK):
                    raise PermissionError(f"{directory} is not writable")
        except OSError as e:
            raise ValueError(f"{option}={str(self.root)!r}: the results store cannot be "
                             f"created or written there ({e})") from None  # fmt: skip

    def unit_path(self, key: str) -> Path:
        return self.units_dir / f"{key}.parquet"

    def get(self, key: str) -> pd.DataFrame | None:
        """The rows of unit ``key`` (columns :data:`UNIT_COLUMNS`), ``None`` if absent.
        An unreadable file counts as absent (a warning names it); the unit is recomputed
        and the file replaced."""
        path = self.unit_path(key)
        if not path.exists():
            return None
        frame = _read([path], UNIT_COLUMNS)
        return frame if len(frame) else None

    def put(
        self,
        key: str,
        unit: str,
        rows: Iterable[Row],
        config: Mapping[str, Any],
        code_version: str,
    ) -> Path:
        """Store the rows of unit ``unit`` under ``key``, with the config the key digests."""
        frame = rows_frame(rows)
        if frame.empty:
            raise ValueError(f"results store: unit {unit!r} has no rows to store")
        frame = frame.assign(unit=unit, unit_key=key, code_version=code_version,
                             config=json.dumps(config, sort_keys=True, default=str),
                             created=_now())  # fmt: skip
        return _write(frame, self.unit_path(key), UNIT_COLUMNS)

    def record_run(
        self, run: str, run_dir: str | os.PathLike, units: Mapping[str, str],
        reused: Collection[str] = (),
    ) -> Path:  # fmt: skip
        """Record (replacing an earlier record of the same directory) that run ``run`` in
        ``run_dir`` used ``units`` (``{unit: key}``), of which ``reused`` came from the store."""
        run_dir = str(Path(run_dir).resolve())
        frame = pd.DataFrame(
            [{"run": run, "run_dir": run_dir, "unit": unit, "unit_key": key,
              "reused": unit in reused, "recorded": _now()} for unit, key in units.items()],
            columns=list(RUN_COLUMNS),
        )  # fmt: skip
        return _write(frame, self.runs_dir / f"{json_digest(run_dir)[:24]}.parquet", RUN_COLUMNS)

    def results(self, run_dirs: Iterable[str | os.PathLike] | None = None) -> pd.DataFrame:
        """Every stored unit's rows (each computed unit once), or, given ``run_dirs``, the
        rows of the units those runs used (a run directory may be a sweep's: every run
        under it counts)."""
        frame = _read(sorted(self.units_dir.glob("*.parquet")), UNIT_COLUMNS)
        if run_dirs is None:
            return frame
        prefixes = [str(Path(d).resolve()) for d in run_dirs]
        runs = self.runs()
        used = runs[[any(d == p or d.startswith(p + os.sep) for p in prefixes)
                     for d in runs.run_dir]]  # fmt: skip
        return frame[frame.unit_key.isin(set(used.unit_key))].reset_index(drop=True)

    def runs(self) -> pd.DataFrame:
        """The run records (columns :data:`RUN_COLUMNS`)."""
        return _read(sorted(self.runs_dir.glob("*.parquet")), RUN_COLUMNS)

    def sql(self, query: str) -> pd.DataFrame:
        """Run a DuckDB SQL ``query`` over the views ``results`` (the units' rows) and
        ``runs``, e.g. ``SELECT method, avg(value) FROM results WHERE split='test' AND
        task='average' AND metric='normalized_accuracy' GROUP BY method``."""
        try:
            import duckdb
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                "SQL over the results store needs duckdb (pip install duckdb); pandas "
                "works without it: ResultStore(...).results()"
            ) from None
        with duckdb.connect() as db:
            for name, folder, columns in (("results", self.units_dir, UNIT_COLUMNS),
                                          ("runs", self.runs_dir, RUN_COLUMNS)):  # fmt: skip
                if any(folder.glob("*.parquet")):
                    files = f"read_parquet('{folder}/*.parquet', union_by_name=true)"
                    db.execute(f"CREATE VIEW {name} AS SELECT * FROM {files}")
                else:  # an empty store still answers, with no rows
                    db.register(name, pd.DataFrame(columns=list(columns)))
            return db.execute(query).df()
