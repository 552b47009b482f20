"""The layout as docs/ARCHITECTURE.md draws it, enforced: which part may import which, that
the model-free core pulls in no Ray, FastAPI or torch, and that modules stay readable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# part -> the project parts it may import (besides itself). HTTP -> jobs -> replicas ->
# models -> core, one way; inside each layer, the arrows below.
ALLOWED: dict[str, set[str]] = {
    "serve_app.routers": {"serve_app", "serve_app.services", "jobs", "deployments.core"},
    "serve_app.services": {"serve_app", "jobs", "deployments.core"},
    "serve_app": {"serve_app.routers", "serve_app.services", "jobs", "deployments"},
    "jobs.pipeline": {
        "jobs.config",
        "jobs.state",
        "jobs.stitching",
        "jobs.integrations",
        "deployments",
    },
    "jobs.state": {"jobs.stitching", "jobs.integrations", "deployments.core"},
    "jobs.config": set(),
    "jobs.stitching": {"deployments.core"},
    "jobs.live": {"jobs.stitching", "deployments.core"},
    "jobs.integrations": set(),
    "deployments.replicas": {"deployments.models", "deployments.core"},
    "deployments.models": {"deployments.core"},
    "deployments.core": set(),
    "client": set(),
    "jobs": set(),  # the package docstrings
    "deployments": set(),
}
PROJECT = ("serve_app", "jobs", "deployments", "client")
# Third-party packages the model-free core must not pull in, even lazily.
CORE_FORBIDDEN = {"ray", "fastapi", "starlette", "torch", "pyannote", "ctranslate2"}
MAX_LINES = 450


def _imports(path: Path) -> set[str]:
    """Every absolute import in the file, function-level ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _part(module: str) -> str:
    """The most specific ALLOWED key that `module` belongs to."""
    best = ""
    for part in ALLOWED:
        if (module == part or module.startswith(part + ".")) and len(part) > len(best):
            best = part
    return best


def _module(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    if parts[0] == "client":  # client/speech_cluster_client/... is the `client` part
        return "client." + ".".join(parts[1:])
    return ".".join(parts)


def _sources() -> list[Path]:
    files = []
    for top in PROJECT:
        files += [p for p in (REPO / top).rglob("*.py") if ".venv" not in p.parts]
    return sorted(files)


def _target_part(name: str) -> str | None:
    if name.split(".")[0] == "speech_cluster_client":
        return "client"
    if name.split(".")[0] not in PROJECT:
        return None
    return _part(name) or name


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_one_way(path):
    here = _part(_module(path))
    assert here, f"{path} is in no part of ALLOWED: add it to the layout"
    wrong = []
    for name in _imports(path):
        there = _target_part(name)
        if there is None or there == here:
            continue
        if not any(there == a or there.startswith(a + ".") for a in ALLOWED[here]):
            wrong.append(f"{name} ({there})")
    assert not wrong, f"{here} may import {sorted(ALLOWED[here])}, not {sorted(wrong)}"


def test_routers_never_import_each_other():
    for path in (REPO / "serve_app" / "routers").glob("*.py"):
        mine = _module(path)
        others = {n for n in _imports(path) if n.startswith("serve_app.routers") and n != mine}
        assert not others, f"{path.name} imports {others}: share it through serve_app.services"


def test_the_core_imports_neither_ray_nor_fastapi_nor_models():
    for path in (REPO / "deployments" / "core").glob("*.py"):
        heavy = {n for n in _imports(path) if n.split(".")[0] in CORE_FORBIDDEN}
        assert not heavy, f"{path.name} imports {heavy}"


def test_no_source_module_is_over_the_line_limit():
    long = {
        str(p.relative_to(REPO)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
