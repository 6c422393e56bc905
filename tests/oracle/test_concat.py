"""concat / split / gather against torch: values exactly (fp32 and bf16), gradients (split with
pieces that get no gradient, gather with repeated indices as scatter-add)."""
import numpy as np
import pytest
import torch

from conftest import OpError, run_op
from elementwise_ref import check

DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("last", [1, 7, 33, 1000, 4097])
def test_concat(dim, last, dtype):
    shapes = [[2, 3, last], [2, 3, last], [2, 3, last]]
    d = dim % 3
    for s, k in zip(shapes, [1, 4, 2]):
        s[d] = k if d != 2 else s[d] + k
    xs = {f"x{i}": torch.randn(s).to(dtype) for i, s in enumerate(shapes)}
    r = check("concat", xs, lambda **t: torch.cat([t[f"x{i}"] for i in range(3)], dim), {"n": 3, "dim": dim})
    np.testing.assert_array_equal(r.outputs[0], torch.cat(list(xs.values()), dim).float().numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,sizes,dim", [((10, 7), [3, 0, 7], 0), ((4, 33), [1, 16, 16], 1),
                                             ((2, 5, 4097), [4096, 1], -1), ((3, 1000), [500, 500], -1)])
def test_split(shape, sizes, dim, dtype):
    x = torch.randn(shape).to(dtype)
    ref = lambda x: list(torch.split(x, sizes, dim))
    check("split", {"x": x}, ref, {"sizes": sizes, "dim": dim})
    # The first piece gets no gradient: the engine passes zeros for it.
    check("split", {"x": x}, ref, {"sizes": sizes, "dim": dim}, skip_grads=(0,))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,ishape,dim", [((4, 1000), (4, 1), 1), ((4, 33), (4, 50), 1), ((7, 5), (20, 5), 0),
                                               ((3, 4, 5), (2, 4, 3), 1), ((3, 4, 4097), (3, 2, 7), -1),
                                               ((6, 3), (4, 2), 0)])
def test_gather(xshape, ishape, dim, dtype):
    x = torch.randn(xshape).to(dtype)
    index = torch.randint(0, xshape[dim], ishape, dtype=torch.int64)
    r = check("gather", {"x": x, "index": index}, lambda x, index: torch.gather(x, dim, index), {"dim": dim},
              grad=["x"])
    np.testing.assert_array_equal(r.outputs[0], torch.gather(x, dim, index).float().numpy())


def test_errors():
    with pytest.raises(OpError, match="shape"):
        run_op("concat", {"x0": torch.randn(2, 3), "x1": torch.randn(3, 3)}, {"n": 2, "dim": 1})
    with pytest.raises(OpError, match="add up"):
        run_op("split", {"x": torch.randn(4, 5)}, {"sizes": [2, 2], "dim": 1})
    with pytest.raises(OpError, match="out of range"):
        run_op("gather", {"x": torch.randn(2, 3), "index": torch.tensor([[0], [3]])}, {"dim": 1})
    with pytest.raises(OpError, match="i64"):
        run_op("gather", {"x": torch.randn(2, 3), "index": torch.zeros(2, 1, dtype=torch.int32)}, {"dim": 1})
