"""Oracle harness: run one of our ops through the automodel_oracle executable and get its outputs
and input gradients back as numpy arrays, to compare with torch on the same inputs.

Tolerances are relative to the reference's magnitude: rel_err(ours, ref) = max|ours - ref| / max|ref|.
References are computed in float64 from the same (fp32 or bf16-rounded) inputs."""
import json
import os
import pathlib
import subprocess
import tempfile

import numpy as np
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("AUTOMODEL_BUILD_DIR", ROOT / "build"))
RUNNER = BUILD / "tests" / "automodel_oracle"

FWD_F32, BWD_F32, BF16 = 1e-5, 1e-4, 1e-2


class OpError(Exception):
    """Our op raised automodel::Error; str(e) is its message."""


class Result:
    def __init__(self, outputs, grads):
        self.outputs = outputs  # list of np.ndarray
        self.grads = grads  # dict input name -> np.ndarray


def _to_numpy(value):
    """(array, dtype tag): bf16 travels as raw uint16 bits."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            return value.contiguous().view(torch.int16).numpy().view(np.uint16), "bf16"
        return value.contiguous().numpy(), ""
    return np.ascontiguousarray(value), ""


def run_op(op, inputs, params=None, grad_outputs=None, requires_grad=()):
    """Runs `op` on `inputs` (name -> torch tensor or numpy array). When grad_outputs is given
    (one per output, None to skip), backpropagates it and returns gradients of `requires_grad`."""
    assert RUNNER.exists(), f"{RUNNER} missing: build the project first"
    with tempfile.TemporaryDirectory(prefix="oracle_") as d:
        d = pathlib.Path(d)
        spec = {"op": op, "params": params or {}, "inputs": {}}
        for name, value in inputs.items():
            arr, tag = _to_numpy(value)
            np.save(d / f"{name}.npy", arr)
            spec["inputs"][name] = {"dtype": tag, "requires_grad": name in requires_grad}
        if grad_outputs is not None:
            spec["grad_outputs"] = []
            for i, g in enumerate(grad_outputs):
                if g is None:
                    spec["grad_outputs"].append(None)
                    continue
                arr, tag = _to_numpy(g)
                np.save(d / f"gout_{i}.npy", arr)
                spec["grad_outputs"].append(f"gout_{i}.npy")
                spec["grad_dtype"] = tag
        (d / "case.json").write_text(json.dumps(spec))
        subprocess.run([str(RUNNER), str(d)], capture_output=True, timeout=120)
        result = json.loads((d / "result.json").read_text())
        if not result["ok"]:
            raise OpError(result["error"])
        outputs = [np.load(d / f"out_{i}.npy") for i in range(result["num_outputs"])]
        grads = {n: np.load(d / f"grad_{n}.npy") for n in requires_grad if (d / f"grad_{n}.npy").exists()}
        return Result(outputs, grads)


def rel_err(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = ref.detach().double().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} vs reference {ref.shape}"
    if ref.size == 0:
        return 0.0
    scale = max(np.abs(ref).max(), 1e-30)
    return float(np.abs(ours - ref).max() / scale)


def assert_close(ours, ref, tol, what=""):
    err = rel_err(ours, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """model_dir(name): the tests/oracle/tiny_models.py variant saved by transformers, built once per session."""
    import tiny_models

    root = tmp_path_factory.mktemp("tiny_models")
    built = {}

    def get(name):
        if name not in built:
            built[name] = tiny_models.build(name, root / name)
        return built[name]

    return get
