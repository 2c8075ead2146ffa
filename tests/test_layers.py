"""Dependencies point down: no package of ollana imports one above it, or one beside it."""

from __future__ import annotations

import ast
from pathlib import Path

import ollana

SRC = Path(ollana.__file__).resolve().parent

# Top to bottom. A module may import from its own package and from lower layers only;
# packages that share a layer do not import each other.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"__main__"}),
    frozenset({"cli"}),
    frozenset({"runner", "daemon", "demo"}),
    frozenset({"modes"}),
    frozenset({"admin"}),
    frozenset({"proxy", "wake"}),
    frozenset({"cluster"}),
    frozenset({"metrics"}),
    frozenset({"discovery", "identity", "emulator", "local_ollama", "usage"}),
    frozenset({"http"}),
    frozenset({"ollama_api", "config", "lifecycle", "logs", "activity"}),
    frozenset({"filemodes", "__init__"}),
)
RANK = {name: index for index, layer in enumerate(LAYERS) for name in layer}


def _part(module: str) -> str:
    """The top-level part of ollana a module belongs to ("ollana.http.client" -> "http")."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ollana":
                # `from ollana import __version__` is the package root; `from ollana import x`
                # of a subpackage is that subpackage.
                for alias in node.names:
                    name = alias.name if alias.name in RANK else "__init__"
                    found.append((node.lineno, f"ollana.{name}"))
            elif node.module.startswith("ollana."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ollana.")]
    return found


def test_every_part_has_a_layer() -> None:
    parts = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if not p.name.startswith(".")}
    parts = {p for p in parts if (SRC / p).is_dir() or (SRC / f"{p}.py").is_file()}
    parts.discard("__pycache__")
    assert parts - RANK.keys() == set()


def test_dependencies_point_down() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(("ollana", *path.relative_to(SRC).with_suffix("").parts))
        mine = _part(module)
        for line, target in _imports(path):
            theirs = _part(target)
            if theirs == mine:
                continue
            if RANK[theirs] <= RANK[mine]:
                where = "beside" if RANK[theirs] == RANK[mine] else "above"
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {target} ({where} it)")
    assert wrong == []
