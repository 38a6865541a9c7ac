"""The cache core (evaluation.cache): checksummed manifests with per-file sidecar records, a
corrupt manifest rebuilt from intact files, permissions, stale temporaries, read-only use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.cache import Manifest, atomic_path, file_sha256, source_identity

RECIPE = {"version": 1, "size": 8}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def build(root: Path, names=("a.bin", "sub/b.bin")) -> Manifest:
    manifest = Manifest(root, RECIPE, "test")
    for i, name in enumerate(names):
        with manifest.writing(name, index=i) as tmp:
            tmp.write_bytes(bytes([i]) * 100)
    return manifest


def test_files_are_recorded_in_the_manifest_and_beside_themselves(tmp_path):
    build(tmp_path)
    again = Manifest(tmp_path, RECIPE, "test")
    assert again.trusted("a.bin") and again.trusted("sub/b.bin")
    assert again.files["sub/b.bin"] == {"index": 1, "sha256": file_sha256(tmp_path / "sub/b.bin")}
    side = json.loads((tmp_path / "sub/b.bin.record.json").read_text())
    assert side["record"] == again.files["sub/b.bin"]
    with pytest.warns(UserWarning, match="written for another recipe; rebuilding"):
        assert not Manifest(tmp_path, {**RECIPE, "size": 9}, "test").files


@pytest.mark.parametrize("damage", ["unreadable", "missing", "malformed"])
def test_a_corrupt_manifest_is_rebuilt_from_the_intact_files(tmp_path, damage):
    build(tmp_path)
    path = tmp_path / "manifest.json"
    if damage == "unreadable":
        path.write_text("{not json")
    elif damage == "missing":
        path.unlink()
    else:
        path.write_text(json.dumps({"recipe": RECIPE, "files": {"a.bin": {"sha256": 3}}}))
    raw = bytearray((tmp_path / "sub/b.bin").read_bytes())
    raw[10] ^= 0xFF  # one damaged file: not recovered, rebuilt
    (tmp_path / "sub/b.bin").write_bytes(bytes(raw))
    if damage == "missing":  # nothing was wrong with a manifest: no warning
        manifest = Manifest(tmp_path, RECIPE, "test")
    else:
        with pytest.warns(UserWarning, match=r"manifest.json .*recovered 1 intact file"):
            manifest = Manifest(tmp_path, RECIPE, "test")
    assert set(manifest.files) == {"a.bin"} and manifest.files["a.bin"]["index"] == 0
    assert set(json.loads(path.read_text())["files"]) == {"a.bin"}  # rewritten
    with pytest.warns(UserWarning, match="b.bin fails its checksum; rebuilding"):
        assert not manifest.trusted("sub/b.bin")


def test_a_build_killed_before_its_records_is_not_trusted(tmp_path):
    manifest = build(tmp_path)
    # killed after the sidecar, before the manifest: the sidecar vouches for the file
    del manifest.files["a.bin"]
    manifest._write_manifest()
    assert Manifest(tmp_path, RECIPE, "test").trusted("a.bin")
    # killed after the rename, before the sidecar: unrecorded
    (tmp_path / "a.bin.record.json").unlink()
    with pytest.warns(UserWarning, match="a.bin is not recorded in the manifest"):
        assert not Manifest(tmp_path, RECIPE, "test").trusted("a.bin")


def test_cache_files_are_created_with_the_umasks_permissions(tmp_path):
    build(tmp_path)
    for name in ("a.bin", "a.bin.record.json", "manifest.json", "sub/b.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask(), name


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    dead = tmp_path / ".a.bin.999999999.xyz.tmp"  # no such process
    live = tmp_path / f".a.bin.{os.getpid()}.xyz.tmp"  # a write in progress
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    build(tmp_path)
    assert not dead.exists() and live.exists()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError("killed")
    assert not (tmp_path / "c.bin").exists() and not list(tmp_path.glob(".c.bin.*"))


KILLED_WRITER = """
import sys, time
from evaluation.cache import Manifest
with Manifest(sys.argv[1], {"version": 1, "size": 8}, "test").writing("a.bin") as tmp:
    tmp.write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_a_writer_killed_by_sigkill_leaves_nothing_trusted_and_nothing_behind(tmp_path):
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], cwd=root,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert writer.stdout.readline().strip() == "writing"
    writer.kill()  # SIGKILL: no cleanup code runs
    writer.wait()
    writer.stdout.close()
    assert len(list(tmp_path.glob(".a.bin.*.tmp"))) == 1
    assert not Manifest(tmp_path, RECIPE, "test").trusted("a.bin")
    build(tmp_path)  # the next write in that directory removes the dead writer's file
    assert not list(tmp_path.glob(".*.tmp"))


def test_building_in_a_read_only_cache_names_the_file(tmp_path, monkeypatch):
    manifest = build(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)
    assert Manifest(tmp_path, RECIPE, "test").trusted("a.bin")  # reading needs no write
    with pytest.raises(PermissionError, match=r"test cache file .*c.bin must be built, but .* "
                                              r"is not writable"):  # fmt: skip
        with manifest.writing("c.bin") as tmp:
            tmp.write_bytes(b"x")


def test_source_identity_keeps_hub_ids_and_tracks_local_files(tmp_path: Path) -> None:
    assert source_identity("org/dataset") == "org/dataset"  # not a local path: a hub id
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("1")
    first = source_identity(str(data))
    assert first.startswith(str(data.resolve())) and source_identity(str(data)) == first
    (data / "a.txt").write_text("22")  # another size: another identity
    assert source_identity(str(data)) != first
    single = source_identity(str(data / "a.txt"))
    assert single.startswith(str((data / "a.txt").resolve()))
