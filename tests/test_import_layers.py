"""The package's import order: layers and the utilities below data, data below modeling, modeling
below engine / evaluation / solver / predictor / export. No module imports a higher layer (late
imports inside functions included)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "projects" / "DePOTR" / "depotr"
# Top-level module or subpackage of depotr -> layer; a module may import its own layer or lower.
LAYER = {
    "layers": 0,
    "config": 0,
    "file_io": 0,
    "cli": 0,
    "data": 1,
    "modeling": 2,
    "engine": 3,
    "evaluation": 3,
    "solver": 3,
    "predictor": 3,
    "export": 3,
    "tracking": 3,
}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] in LAYER or p.stem in LAYER)


def _imported_depotr_parts(path: pathlib.Path):
    """Top-level depotr parts imported by the module at ``path`` (absolute and relative imports)."""
    package = ["depotr", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names = (base + (node.module or "").split(".")) if node.module else base
            names = [n for n in names if n]
            if names[:1] == ["depotr"] and len(names) == 1:  # from depotr import x / from . import x
                yield from (alias.name for alias in node.names)
            elif names[:1] == ["depotr"]:
                yield names[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "depotr" and len(parts) > 1:
                    yield parts[1]


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_no_module_imports_a_higher_layer(path):
    parts = path.relative_to(PACKAGE).parts
    own = LAYER[parts[0] if len(parts) > 1 else path.stem]
    higher = sorted({part for part in _imported_depotr_parts(path) if LAYER.get(part, -1) > own})
    assert not higher, f"{path.relative_to(PACKAGE)} (layer {own}) imports the higher layer(s) {higher}"
