"""check_layering.py's rules, on small made-up source trees (and the real one)."""
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent / "check_layering.py"
SRC = SCRIPT.parents[1] / "src"


def violations(tmp_path, files):
    """check_layering.py's complaints about a tree of {path under src/: [included headers]}."""
    for rel, includes in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f'#include "{h}"\n' for h in includes))
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    lines = [line for line in r.stdout.splitlines() if not line.startswith("layering:")]
    assert r.returncode == (1 if lines else 0), r.stdout
    return lines


def test_the_source_tree_keeps_its_layers():
    r = subprocess.run([sys.executable, str(SCRIPT), str(SRC)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert "layering: 0 violations" in r.stdout


def test_components_reach_kernels_only_through_ops(tmp_path):
    found = violations(tmp_path, {
        "components/optim/optimizer.cpp": ["ops/backend.h", "kernels/cpu/cast.h", "kernels/backend.h", "core/tensor.h"],
        "components/loss/linear_ce.cpp": ["ops/linear_cross_entropy.h"],
    })
    assert found == [
        "components/optim/optimizer.cpp:2: component optim includes kernels/cpu/cast.h (kernels: call them through ops/)",
        "components/optim/optimizer.cpp:3: component optim includes kernels/backend.h (kernels: call them through ops/)",
    ]


def test_backends_share_only_the_kernels_headers(tmp_path):
    found = violations(tmp_path, {
        "kernels/cpu/backend.cpp": ["kernels/backend.h", "kernels/shapes.h", "core/dtype.h", "kernels/no_cuda/x.h"],
        "kernels/no_cuda/backend.cpp": ["kernels/backend.h", "kernels/cpu/gemm.h"],
        "kernels/backend.h": ["kernels/shapes.h", "kernels/cpu/gemm.h"],
        "ops/backend.h": ["kernels/backend.h"],
    })
    assert found == [
        "kernels/backend.h:2: kernels includes kernels/cpu/gemm.h (kernels/cpu)",
        "kernels/cpu/backend.cpp:4: backend kernels/cpu includes kernels/no_cuda/x.h (the backend kernels/no_cuda)",
        "kernels/no_cuda/backend.cpp:2: backend kernels/no_cuda includes kernels/cpu/gemm.h (the backend kernels/cpu)",
    ]


def test_lower_layers_never_include_higher_ones_nor_components_their_siblings(tmp_path):
    found = violations(tmp_path, {
        "core/storage.cpp": ["core/device_memory.h", "kernels/backend.h"],
        "ops/matmul.cpp": ["autograd/engine.h"],
        "components/loss/masked_ce.cpp": ["components/optim/optimizer.h", "components/loss/cross_entropy.h"],
    })
    assert found == [
        "components/loss/masked_ce.cpp:1: component loss includes components/optim/optimizer.h (a sibling component)",
        "core/storage.cpp:2: core includes kernels/backend.h (kernels)",
        "ops/matmul.cpp:1: ops includes autograd/engine.h (autograd)",
    ]
