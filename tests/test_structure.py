"""The architecture's rules, checked: registry <-> configs, presets, import direction."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.config import register_schemas
from merging import METHODS, method_spec

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PACKAGES = ("merging", "evaluation", "experiments")
MERGING_MAY_IMPORT = {"torch", "numpy", "scipy", "merging"}


def composed(*overrides: str):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


def method_configs() -> dict[str, str]:
    """config file stem -> its ``fn``."""
    return {
        p.stem: OmegaConf.load(p).fn for p in sorted((CONF / "method").glob("*.yaml"))
    }


def library_methods() -> dict:
    """The methods registered by ``merging.methods`` (tests may register stand-ins)."""
    method_spec("zeroshot")  # registers every method
    return {n: s for n, s in METHODS.items() if s.fn.__module__.startswith("merging.methods.")}


def test_every_registered_method_has_a_config_and_every_config_fn_is_registered():
    fns = set(method_configs().values())
    assert sorted(set(library_methods()) - fns) == [], "registered methods without a config"
    assert sorted(fns - set(METHODS)) == [], "configs naming unregistered methods"
    for name, fn in method_configs().items():
        assert name == fn or name.startswith(f"{fn}_") or "label" in OmegaConf.load(
            CONF / "method" / f"{name}.yaml"
        ), f"conf/method/{name}.yaml is a variant of {fn} without its own label"


def test_every_method_declares_its_metadata():
    for spec in library_methods().values():
        assert spec.label and spec.reference, spec.name
        assert spec.fn.__doc__, f"{spec.name} has no docstring"


PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset):
    cfg = composed(f"+experiment={preset}")
    OmegaConf.to_container(cfg, resolve=True)
    instantiate(cfg.pipeline).validate(cfg)


def test_the_default_config_validates():
    cfg = composed()
    instantiate(cfg.pipeline).validate(cfg)


def imports_of(path: Path) -> set[str]:
    """Top-level package.module names imported anywhere in ``path`` (lazy imports too)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def test_merging_imports_only_torch_numpy_scipy():
    for name, path in SOURCES.items():
        if name.split(".")[0] != "merging":
            continue
        for imported in imports_of(path):
            top = imported.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            assert top in MERGING_MAY_IMPORT, f"{path}: imports {imported}"


def test_imports_point_one_way_and_the_evaluation_core_names_no_family():
    rank = {"merging": 0, "evaluation": 1, "experiments": 2}
    families = {p.name for p in (ROOT / "evaluation").iterdir() if (p / "__init__.py").exists()}
    for name, path in SOURCES.items():
        top = name.split(".")[0]
        core = top == "evaluation" and name.count(".") == 1
        for imported in imports_of(path):
            other = imported.split(".")[0]
            if other in rank:
                assert rank[other] <= rank[top], f"{path}: {top} imports {imported}"
            if core and other == "evaluation":
                assert imported.split(".")[1] not in families, f"{path}: core imports {imported}"


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for name, path in SOURCES.items():
        deps = set()
        for imported in imports_of(path):
            while imported and imported not in SOURCES:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(f"{imported}."):
                deps.add(imported)
        graph[name] = deps
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep) :] + [dep] if dep in trail else [node, dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
