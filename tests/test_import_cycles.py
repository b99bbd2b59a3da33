"""No import cycles between the modules that once had them: the zoo's builder and the circuit and rule
builders, the audit's page and report, the runner's pool and its Ray backend. Imports inside functions
count (a lazy import is still a cycle in the design); imports under ``if TYPE_CHECKING:`` do not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
GROUPS = [
    ("eis.zoo.build", "eis.zoo.circuits.build", "eis.zoo.rules.build"),
    ("eis.audit.page", "eis.audit.report"),
    ("eis.runner.execute", "eis.runner.ray_backend"),
]


def imports_of(module: str) -> set[str]:
    """Every eis module ``module`` imports at run time (top level or inside functions)."""
    path = SRC.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eis"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("eis"))
    return out


def test_the_checker_sees_lazy_imports_and_skips_typing_ones() -> None:
    assert "eis.runner.execute" in imports_of("eis.runner.ray_backend")
    assert "eis.audit.page" in imports_of("eis.audit.report")  # lazy, inside render
    assert "eis.audit.report" not in imports_of("eis.audit.page")  # only under TYPE_CHECKING


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: " / ".join(g))
def test_no_cycle_within(group: tuple[str, ...]) -> None:
    for a in group:
        for b in group:
            if a != b and b in imports_of(a):
                assert a not in imports_of(b), f"{a} and {b} import each other"
