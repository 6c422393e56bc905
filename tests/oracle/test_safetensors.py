"""io/ safetensors against the reference `safetensors` library (and huggingface_hub's sharding): the files we
write are byte-identical to what safetensors.torch / safetensors.numpy write for the same tensors and metadata,
files it writes load in ours with identical values, and sharded checkpoints follow transformers' layout."""
import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from huggingface_hub import load_torch_model, save_torch_state_dict, split_torch_state_dict_into_shards

from conftest import OpError, run_op


def _tensors():
    """Several names (unsorted, dotted, non-ASCII) and every dtype we can send through the runner."""
    return {
        "model.layers.1.mlp.up_proj.weight": torch.randn(17, 5),
        "model.embed_tokens.weight": torch.randn(11, 8).to(torch.bfloat16),
        "lm_head.weight": torch.randn(3, 7, dtype=torch.float64),
        "model.norm.weight": torch.randn(13).to(torch.bfloat16),
        "positions": torch.randint(-1000, 1000, (9,), dtype=torch.int64),
        "counts": torch.randint(-50, 50, (2, 3), dtype=torch.int32),
        "mask": torch.rand(5) > 0.5,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "zéta": torch.randn(2, 2),
    }


def _save_ours(path, tensors, metadata="default"):
    params = {"path": str(path), "names": list(tensors)}
    if metadata != "default":
        params["metadata"] = metadata
    run_op("safetensors_save", tensors, params)


def _header(raw):
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


@pytest.mark.parametrize(
    "metadata",
    [{"format": "pt"}, None, {}, {"note": 'üñí "quoted" \\ tab\t nl\n ctl\x01 del\x7f /'}],
    ids=["format_pt", "none", "empty", "escapes"],
)
def test_save_is_byte_identical_to_safetensors_torch(tmp_path, metadata):
    tensors = _tensors()
    _save_ours(tmp_path / "ours.safetensors", tensors, metadata)
    safetensors.torch.save_file(tensors, str(tmp_path / "ref.safetensors"), metadata=metadata)
    ours = (tmp_path / "ours.safetensors").read_bytes()
    ref = (tmp_path / "ref.safetensors").read_bytes()
    assert ours == ref
    assert not (tmp_path / "ours.safetensors.tmp").exists()


def test_save_with_several_metadata_keys_matches_up_to_key_order(tmp_path):
    # The reference stores metadata in a hash map, so with several keys its order is not even stable between
    # runs; ours is sorted. Everything else must be identical.
    tensors = _tensors()
    metadata = {"format": "pt", "zz": "1", "aa": "2", "mid": "3"}
    _save_ours(tmp_path / "ours.safetensors", tensors, metadata)
    safetensors.torch.save_file(tensors, str(tmp_path / "ref.safetensors"), metadata=metadata)
    ours = (tmp_path / "ours.safetensors").read_bytes()
    ref = (tmp_path / "ref.safetensors").read_bytes()
    n_ours, h_ours = _header(ours)
    n_ref, h_ref = _header(ref)
    assert n_ours == n_ref and h_ours == h_ref
    assert list(h_ours) == list(h_ref)  # tensor order (after __metadata__) is the reference's
    assert ours[8 + n_ours :] == ref[8 + n_ref :]


def test_save_is_byte_identical_to_safetensors_numpy(tmp_path):
    arrays = {
        "b.weight": np.random.randn(6, 5).astype(np.float32),
        "a.weight": np.random.randn(7).astype(np.float64),
        "ids": np.arange(-3, 8, dtype=np.int64),
        "small": np.arange(5, dtype=np.int32),
        "flags": np.array([True, False, True]),
    }
    _save_ours(tmp_path / "ours.safetensors", arrays, None)
    safetensors.numpy.save_file(arrays, str(tmp_path / "ref.safetensors"))
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_resave_of_reference_file_is_byte_identical(tmp_path):
    # f16 cannot travel through the runner's .npy inputs, so it goes through our reader instead.
    tensors = _tensors()
    tensors["half"] = torch.randn(4, 3).to(torch.float16)
    tensors["half.odd"] = torch.randn(5).to(torch.float16)
    safetensors.torch.save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    run_op("safetensors_resave", {}, {"src": str(tmp_path / "ref.safetensors"), "dst": str(tmp_path / "ours.safetensors")})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def _as_numpy(t):
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.float().numpy()
    if t.dtype in (torch.int8, torch.uint8, torch.int16, torch.uint16):
        return t.to(torch.int32).numpy()
    if t.dtype in (torch.uint32, torch.uint64):
        return t.to(torch.int64).numpy()
    return t.numpy()


def test_reference_files_load_with_identical_values(tmp_path):
    tensors = _tensors()
    tensors.update(
        {
            "half": torch.randn(3, 5).to(torch.float16),
            "i8": torch.randint(-128, 128, (7,), dtype=torch.int8),
            "u8": torch.randint(0, 256, (7,), dtype=torch.uint8),
            "i16": torch.randint(-30000, 30000, (3,), dtype=torch.int16),
            "u16": torch.tensor([0, 65535, 7], dtype=torch.uint16),
            "u32": torch.tensor([0, 4294967295, 7], dtype=torch.uint32),
            "u64": torch.tensor([0, 2**62, 7], dtype=torch.uint64),
        }
    )
    path = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})
    names = list(tensors)
    r = run_op("safetensors_load", {}, {"path": str(path), "names": names})
    for name, got in zip(names, r.outputs):
        want = _as_numpy(tensors[name])
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_reference_file_conversions(tmp_path):
    tensors = {"w": torch.randn(6, 7), "b": torch.randn(9).to(torch.bfloat16), "h": torch.randn(5).to(torch.float16)}
    path = tmp_path / "ref.safetensors"
    safetensors.torch.save_file(tensors, str(path))
    r = run_op("safetensors_load", {}, {"path": str(path), "names": list(tensors), "dtype": "f64"})
    for name, got in zip(tensors, r.outputs):
        np.testing.assert_array_equal(got, tensors[name].double().numpy(), err_msg=name)
    # f32 -> bf16 rounds as torch does (the runner returns bf16 widened to f32, exactly).
    r = run_op("safetensors_load", {}, {"path": str(path), "names": ["w"], "dtype": "bf16"})
    np.testing.assert_array_equal(r.outputs[0], tensors["w"].to(torch.bfloat16).float().numpy())
    r = run_op("safetensors_load", {}, {"path": str(path), "names": ["w"], "dtype": "f16"})
    np.testing.assert_array_equal(r.outputs[0], tensors["w"].to(torch.float16).float().numpy())


def test_fp8_is_listed_but_loading_it_is_a_named_error(tmp_path):
    path = tmp_path / "fp8.safetensors"
    safetensors.torch.save_file({"q": torch.zeros(4).to(torch.float8_e4m3fn), "s": torch.ones(2)}, str(path))
    r = run_op("safetensors_load", {}, {"path": str(path), "names": ["s"]})
    np.testing.assert_array_equal(r.outputs[0], np.ones(2, np.float32))
    with pytest.raises(OpError, match="tensor 'q'.*F8_E4M3"):
        run_op("safetensors_load", {}, {"path": str(path), "names": ["q"]})


def test_files_the_reference_rejects_we_reject(tmp_path):
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(12))
    with pytest.raises(Exception):
        safetensors.torch.load_file(str(path))
    with pytest.raises(OpError, match="overlap tensor 'a'"):
        run_op("safetensors_load", {}, {"path": str(path), "names": ["a"]})


# ---- sharded checkpoints --------------------------------------------------------------------------------


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(40, 16)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(16, 24), torch.nn.Linear(24, 16)])
        self.big = torch.nn.Linear(64, 64, bias=False)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 40)


@pytest.mark.parametrize("max_shard_bytes", [3000, 20000, 10**9])
def test_sharded_dir_follows_transformers_layout(tmp_path, max_shard_bytes):
    model = _Tiny()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = tmp_path / "ckpt"
    params = {"dir": str(out), "names": list(sd), "max_shard_bytes": max_shard_bytes}
    run_op("safetensors_write_sharded", sd, params)

    split = split_torch_state_dict_into_shards(
        sd, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard_bytes
    )
    written = sorted(p.name for p in out.iterdir())
    if not split.is_sharded:
        assert written == ["model.safetensors"]
    else:
        assert written == sorted(list(split.filename_to_tensors) + ["model.safetensors.index.json"])
        # The index text is what transformers' save_pretrained writes for this model.
        index = {
            "metadata": {"total_parameters": sum(v.numel() for v in sd.values()), **split.metadata},
            "weight_map": split.tensor_to_filename,
        }
        expected = json.dumps(index, indent=2, sort_keys=True) + "\n"
        assert (out / "model.safetensors.index.json").read_text() == expected
    # Every shard is byte-identical to the reference writing the same tensors.
    for filename, names in split.filename_to_tensors.items():
        ref = tmp_path / ("ref_" + filename)
        safetensors.torch.save_file({n: sd[n] for n in names}, str(ref), metadata={"format": "pt"})
        assert (out / filename).read_bytes() == ref.read_bytes(), filename
    # huggingface_hub's loader (index semantics included) gets every tensor back.
    fresh = _Tiny()
    load_torch_model(fresh, str(out), strict=True)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    # And so does ours.
    r = run_op("safetensors_load_dir", {}, {"dir": str(out), "names": list(sd)})
    for name, got in zip(sd, r.outputs):
        np.testing.assert_array_equal(got, sd[name].numpy(), err_msg=name)


def test_reference_sharded_dir_loads_in_ours(tmp_path):
    model = _Tiny()
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    sd["embed.weight"] = sd["embed.weight"].to(torch.bfloat16)
    save_torch_state_dict(sd, str(tmp_path), max_shard_size=5000)
    assert (tmp_path / "model.safetensors.index.json").exists()
    r = run_op("safetensors_load_dir", {}, {"dir": str(tmp_path), "names": list(sd)})
    for name, got in zip(sd, r.outputs):
        np.testing.assert_array_equal(got, sd[name].float().numpy() if sd[name].dtype == torch.bfloat16 else sd[name].numpy())


def test_sharded_dir_errors(tmp_path):
    sd = {k: v.detach().clone() for k, v in _Tiny().state_dict().items()}
    save_torch_state_dict(sd, str(tmp_path), max_shard_size=5000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost.weight"] = index["weight_map"]["head.weight"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(OpError, match="puts tensor 'ghost.weight' in shard .* but that shard has no such tensor"):
        run_op("safetensors_load_dir", {}, {"dir": str(tmp_path), "names": ["head.weight"]})
    del index["weight_map"]["ghost.weight"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    missing = index["weight_map"]["head.weight"]
    (tmp_path / missing).unlink()
    with pytest.raises(OpError, match=f"{missing} is missing"):
        run_op("safetensors_load_dir", {}, {"dir": str(tmp_path), "names": ["head.weight"]})
