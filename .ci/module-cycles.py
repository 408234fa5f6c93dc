#!/usr/bin/env python3
"""Import circles between the top-level modules of each crate (issue 21: one-way arrows).

For every crate named below, each file under its src/ belongs to a top-level module (the first
directory or file name under src/; lib.rs and main.rs are the crate root). A module depends on
another when its text names `crate::other` (in `use` lines, paths or docs links). The circles
are the strongly connected components of that graph with more than one module.

Circles listed in .ci/module-cycles.known are tolerated while they are taken apart (the list
may only shrink: a circle not in it fails, and so does a listed one that is gone, so the list
is kept true). Run from the repository root: `python3 .ci/module-cycles.py`.
"""

import pathlib
import re
import sys

CRATES = ["configuration", "engine", "daemon", "host", "plugin-api", "plugin-kit", "plugins/hmb", "plugins/kafka", "plugins/sqlite"]
KNOWN = pathlib.Path(".ci/module-cycles.known")
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
SUPER = re.compile(r"\bsuper::([a-z_][a-z0-9_]*)")


def top_module(src: pathlib.Path, file: pathlib.Path) -> str:
    relative = file.relative_to(src)
    first = relative.parts[0]
    if len(relative.parts) == 1:
        return "<root>" if first in ("lib.rs", "main.rs") else first[: -len(".rs")]
    return first


def strip_comments(text: str) -> str:
    # Line comments and doc comments name modules in prose; only code counts.
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def graph(crate: str) -> dict:
    src = pathlib.Path(crate) / "src"
    modules = {top_module(src, f) for f in src.rglob("*.rs")}
    edges = {m: set() for m in modules}
    for file in src.rglob("*.rs"):
        here = top_module(src, file)
        text = strip_comments(file.read_text())
        names = set(PATH.findall(text))
        # `super::x` from a file directly under src/ (a top-level module) names a sibling.
        if len(file.relative_to(src).parts) == 1 and here != "<root>":
            names |= set(SUPER.findall(text))
        for name in names:
            if name in modules and name != here:
                edges[here].add(name)
    edges.pop("<root>", None)
    for targets in edges.values():
        targets.discard("<root>")
    return edges


def circles(edges: dict) -> list:
    """Tarjan's strongly connected components, those of two modules or more."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    known = set()
    if KNOWN.exists():
        for line in KNOWN.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                known.add(line)
    seen = set()
    failed = False
    for crate in CRATES:
        for component in circles(graph(crate)):
            line = f"{crate}: {' '.join(component)}"
            seen.add(line)
            if line in known:
                print(f"known circle (to take apart): {line}")
            else:
                print(f"NEW import circle: {line}")
                failed = True
    for line in sorted(known - seen):
        print(f"gone (remove it from {KNOWN}): {line}")
        failed = True
    if not failed:
        print("module circles: none new")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
