"""The layers of docs/architecture.md, held to: what each package of the project may import."""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PROJECT = ("schemas", "render", "flow", "pipelines", "training")

# layer -> the layers of the project it may import (itself always). A layer is a top-level
# package, or a sub-package of `pipelines`; `pipelines` alone is its top-level modules.
ALLOWED = {
    "schemas": set(),
    "render": {"schemas"},
    "flow": {"schemas"},
    "training": {"schemas"},
    "pipelines.failures": set(),
    "pipelines.runtime": set(),
    "pipelines.assets": set(),
    "pipelines.manifests": {"schemas", "pipelines.failures"},
    "pipelines.storage": {"schemas", "pipelines.failures", "pipelines.manifests"},
    "pipelines.stages": {
        "schemas",
        "render",
        "flow",
        "pipelines.failures",
        "pipelines.manifests",
    },
    "pipelines.tools": {
        "schemas",
        "render",
        "flow",
        "pipelines.stages",
        "pipelines.storage",
        "pipelines.runtime",
    },
    "pipelines.job": {
        "schemas",
        "render",
        "flow",
        "pipelines.failures",
        "pipelines.manifests",
        "pipelines.stages",
        "pipelines.storage",
        "pipelines.runtime",
        "pipelines.assets",
    },
    "pipelines.preprocess": {
        "schemas",
        "flow",
        "pipelines.job",
        "pipelines.manifests",
        "pipelines.runtime",
    },
}


# Modules a layer may import from a layer it may not import as a whole: the training package
# draws the skeleton styles (`training.pose_render`) with the OpenCV-free style and palette of
# `render`, never `render.skeleton` (OpenCV) or the `render` package's drawing functions.
ALLOWED_MODULES = {
    "training": {"render.style", "render.palette"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "pipelines" and len(parts) > 1:
        return f"pipelines.{parts[1]}"
    return parts[0]


def _modules():
    for package in PROJECT:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            yield name, path


def test_each_layer_imports_only_the_layers_below_it():
    seen, wrong = set(), []
    for module, path in _modules():
        layer = _layer(module)
        if module == "pipelines":
            continue  # the package's docstring only
        assert layer in ALLOWED, f"{module}: a layer docs/architecture.md does not describe"
        seen.add(layer)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                if node.module in PROJECT:  # `from pipelines import assets`: a sub-package
                    names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] not in PROJECT:
                    continue
                target = _layer(name)
                if name in ALLOWED_MODULES.get(layer, ()):
                    continue
                if target != layer and target not in ALLOWED[layer]:
                    wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)
    assert seen == set(ALLOWED)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_no_layer_allows_a_layer_that_allows_it(layer):
    """No circles: the allowed imports form a hierarchy."""
    for other in ALLOWED[layer] | {_layer(m) for m in ALLOWED_MODULES.get(layer, ())}:
        assert layer not in ALLOWED.get(other, set()), (layer, other)


def test_the_modules_training_may_import_from_render_do_not_import_opencv():
    """`render.style` and `render.palette` (and the `render` package, whose drawing functions
    load on first use) import no OpenCV: checked in a fresh process."""
    import subprocess
    import sys

    script = (
        "import sys, render, render.style, render.palette; "
        "assert 'cv2' not in sys.modules, 'cv2 imported'; "
        "from render import render_poses; assert 'cv2' in sys.modules"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
