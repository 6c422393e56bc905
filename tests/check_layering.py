#!/usr/bin/env python3
"""Fails when a file includes a header from a higher layer than its own (DESIGN.md: lower never
includes higher), or when a component includes a sibling component. Usage: check_layering.py SRC_DIR"""
import pathlib
import re
import sys

# Bottom to top; a layer may include itself and anything listed before it.
LAYERS = ["core", "kernels/cpu", "kernels/cuda", "ops", "autograd", "nn", "io", "models",
          "components", "recipes", "cli"]


def layer_of(rel: str) -> int:
    best = -1
    for i, name in enumerate(LAYERS):
        if rel == name or rel.startswith(name + "/"):
            best = i
    return best


def component_of(rel: str) -> str:
    return rel.split("/")[1]


def main() -> int:
    src = pathlib.Path(sys.argv[1])
    bad = []
    for path in sorted(src.rglob("*")):
        if path.suffix not in {".h", ".cpp", ".cu", ".cuh"}:
            continue
        rel = path.relative_to(src).as_posix()
        own = layer_of(rel)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r'\s*#include\s+"([^"]+)"', line)
            if not m:
                continue
            target = layer_of(m.group(1))
            if target > own or (LAYERS[target] == "kernels/cuda" and LAYERS[own] == "kernels/cpu"):
                bad.append(f"{rel}:{n}: {LAYERS[own]} includes {m.group(1)} ({LAYERS[target]})")
            elif LAYERS[own] == "components" and LAYERS[target] == "components" and \
                    component_of(rel) != component_of(m.group(1)):
                bad.append(f"{rel}:{n}: component {component_of(rel)} includes {m.group(1)} (a sibling component)")
    for b in bad:
        print(b)
    print(f"layering: {len(bad)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
