#!/usr/bin/env python3
"""Fails when a file includes a header from a higher layer than its own (DESIGN.md: lower never
includes higher), when a backend includes another backend, when a component includes a sibling
component, or when a component includes kernels/ (components reach the kernels through ops/).
Usage: check_layering.py SRC_DIR"""
import pathlib
import re
import sys

# Bottom to top; a layer may include itself and anything on a lower level. "kernels" is kernels/*.h, the headers no
# backend owns (the backend table and the types its kernels share); the backends above it are siblings.
LEVELS = [["core"], ["kernels"], ["kernels/cpu", "kernels/cuda", "kernels/no_cuda"], ["ops"], ["autograd"], ["nn"],
          ["io"], ["models"], ["components"], ["recipes"], ["cli"]]
LAYERS = [name for level in LEVELS for name in level]
LEVEL_OF = {name: i for i, level in enumerate(LEVELS) for name in level}
BACKENDS = set(LEVELS[2])


def layer_of(rel: str) -> str:
    """The most specific layer `rel` (a path under src/) belongs to."""
    best = ""
    for name in LAYERS:
        if (rel == name or rel.startswith(name + "/")) and len(name) > len(best):
            best = name
    return best or "cli"


def component_of(rel: str) -> str:
    return rel.split("/")[1]


def violation(rel: str, target_path: str) -> str:
    """Why `rel` may not include `target_path`, or "" when it may."""
    own, target = layer_of(rel), layer_of(target_path)
    if LEVEL_OF[target] > LEVEL_OF[own]:
        return f"{own} includes {target_path} ({target})"
    if own in BACKENDS and target in BACKENDS and own != target:
        return f"backend {own} includes {target_path} (the backend {target})"
    if own == "components" and target.startswith("kernels"):
        return f"component {component_of(rel)} includes {target_path} (kernels: call them through ops/)"
    if own == "components" and target == "components" and component_of(rel) != component_of(target_path):
        return f"component {component_of(rel)} includes {target_path} (a sibling component)"
    return ""


def main() -> int:
    src = pathlib.Path(sys.argv[1])
    bad = []
    for path in sorted(src.rglob("*")):
        if path.suffix not in {".h", ".cpp", ".cu", ".cuh"}:
            continue
        rel = path.relative_to(src).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r'\s*#include\s+"([^"]+)"', line)
            if m and (why := violation(rel, m.group(1))):
                bad.append(f"{rel}:{n}: {why}")
    for b in bad:
        print(b)
    print(f"layering: {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
