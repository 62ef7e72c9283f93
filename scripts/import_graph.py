"""The package's import graph, read with `ast` (function-local imports included), as the table in docs/ARCHITECTURE.md.

.venv/bin/python scripts/import_graph.py        # prints the Markdown table and any import circle
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "morningstar_trader"


def edges(package: Path = PACKAGE) -> dict[str, set[str]]:
    "Module -> the package modules it imports anywhere in its file."
    modules = {p.stem for p in package.glob("*.py")} - {"_modidx", "__init__"}
    out = {}
    for name in sorted(modules):
        found = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            target = node.module or ""
            if node.level == 1:
                found.add(target.split(".")[0])
            elif target.startswith("morningstar_trader."):
                found.add(target.split(".")[1])
            elif target == "morningstar_trader":
                found |= {alias.name for alias in node.names}
        out[name] = found & modules - {name}
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Every import circle, each once, as the list of modules along it."
    seen, out = set(), []

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    out.append([*path, nxt])
            elif nxt not in path and nxt > path[0]:
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return out


def main() -> None:
    graph = edges()
    print("| module | imports |\n|---|---|")
    for name, deps in graph.items():
        print(f"| `{name}` | {', '.join(f'`{d}`' for d in sorted(deps)) or '—'} |")
    found = circles(graph)
    print(f"\nImport circles: {len(found)}" + "".join(f"\n- {' → '.join(c)}" for c in found))


if __name__ == "__main__":
    main()
