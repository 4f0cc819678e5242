"""The FID Inception-v3: shapes, PyTorch-layout loading, the .npz round trip and its errors, and
the converter (with a stand-in for torch: torch is never installed here)."""

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from mango_jax.metrics import convert_inception, inception


@pytest.fixture(scope="module")
def tensors():
    return inception.random_state_dict(0)


@pytest.fixture(scope="module")
def model(tensors):
    return inception.from_state_dict(tensors)


def _torch_conv_block(x_nhwc, tensors, name, stride=1, padding=(0, 0)):
    """NumPy reference of torchvision's BasicConv2d on PyTorch-layout tensors."""
    w = tensors[f"{name}.conv.weight"].astype(np.float64)  # [out, in, kh, kw]
    x = np.pad(x_nhwc.astype(np.float64),
               ((0, 0), (padding[0],) * 2, (padding[1],) * 2, (0, 0)))
    _, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    h_out = (x.shape[1] - kh) // stride + 1
    w_out = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], h_out, w_out, w.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + stride * h_out:stride, j:j + stride * w_out:stride]
            out += np.einsum("bhwc,oc->bhwo", patch, w[:, :, i, j])
    bn = {k: tensors[f"{name}.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    out = (out - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-3) * bn["weight"]
    return np.maximum(out + bn["bias"], 0)


@pytest.mark.parametrize("name,cin,stride,padding", [
    ("Conv2d_1a_3x3", 3, 2, (0, 0)),
    ("Mixed_6b.branch7x7_2", 128, 1, (0, 3)),    # (1, 7) kernel
    ("Mixed_6b.branch7x7_3", 128, 1, (3, 0)),    # (7, 1) kernel
    ("Mixed_5b.branch5x5_2", 48, 1, (2, 2)),
])
def test_conv_blocks_load_pytorch_layout(model, tensors, name, cin, stride, padding):
    x = np.random.default_rng(0).normal(size=(1, 9, 11, cin)).astype(np.float32)
    block = model
    for part in name.split("."):
        block = getattr(block, part)
    got = np.asarray(block(jnp.asarray(x)))
    ref = _torch_conv_block(x, tensors, name, stride, padding)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_pools_match_pytorch_semantics():
    x = np.random.default_rng(1).normal(size=(1, 5, 6, 2)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ones = np.pad(np.ones_like(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
    neg = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    win = lambda a, i, j: a[:, i:i + 3, j:j + 3].reshape(1, 9, 2)
    avg = np.zeros_like(x)
    mx = np.zeros_like(x)
    for i in range(5):
        for j in range(6):
            avg[:, i, j] = win(padded, i, j).sum(1) / win(ones, i, j).sum(1)  # no padded zeros
            mx[:, i, j] = win(neg, i, j).max(1)
    np.testing.assert_allclose(np.asarray(inception._avg_pool_exclude_pad(x)), avg, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(inception._max_pool(x, 3, 1, 1)), mx)
    assert inception._max_pool(x, 3, 2).shape == (1, 2, 2, 2)  # VALID, as MaxPool2d(3, 2)


def test_features_shape_and_npz_round_trip(model, tensors, tmp_path):
    fn = inception.FeatureFn(model)
    apply = jax.jit(fn.apply)  # one compilation serves both weight sets
    images = np.random.default_rng(2).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    feats = np.asarray(apply(fn.params, images))
    assert feats.shape == (2, inception.FEATURE_DIM)
    assert np.all(np.isfinite(feats)) and feats.std() > 0
    path = tmp_path / "inception_fid.npz"
    inception.save_npz(model, path)
    loaded = inception.make_fid_features_fn(path)
    np.testing.assert_array_equal(np.asarray(apply(loaded.params, images)), feats)
    # The file holds exactly the documented keys, in PyTorch layout.
    with np.load(path) as data:
        assert set(data.files) == set(tensors) | {"__format__"}
        np.testing.assert_array_equal(data["Mixed_6b.branch7x7_2.conv.weight"],
                                      tensors["Mixed_6b.branch7x7_2.conv.weight"])


def test_format_has_94_blocks_and_pytorch_names():
    shapes = inception.expected_shapes()
    assert len(inception.conv_block_names()) == 94 and len(shapes) == 94 * 5
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert shapes["Mixed_7c.branch_pool.bn.running_var"] == (192,)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 21_820_000


MISSING = r"missing key 'Mixed_6e\.branch7x7dbl_3\.bn\.running_var'"


def test_wrong_keys_give_clear_errors(tensors, tmp_path):
    missing = dict(tensors)
    del missing["Mixed_6e.branch7x7dbl_3.bn.running_var"]
    with pytest.raises(ValueError, match=MISSING):
        inception.check_state_dict(missing)
    extra = dict(tensors, **{"Mixed_5b.branch1x1.conv.bias": np.zeros(64, np.float32)})
    with pytest.raises(ValueError, match=r"unexpected key 'Mixed_5b\.branch1x1\.conv\.bias'"):
        inception.check_state_dict(extra)
    bad = dict(tensors, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 2), np.float32)})
    with pytest.raises(ValueError, match=r"key 'Conv2d_1a_3x3\.conv\.weight' has shape"):
        inception.check_state_dict(bad)
    # The same checks guard the file loader.
    path = tmp_path / "broken.npz"
    with open(path, "wb") as f:
        np.savez(f, __format__=np.array(inception.FORMAT), **missing)
    with pytest.raises(ValueError, match=MISSING):
        inception.load_npz(path)
    with open(path, "wb") as f:
        np.savez(f, **tensors)
    with pytest.raises(ValueError, match="__format__"):
        inception.load_npz(path)
    with pytest.raises(FileNotFoundError, match="convert_inception"):
        inception.load_npz(tmp_path / "absent.npz")


def test_converter_drops_classifier_and_counters(tensors):
    sd = dict(tensors)
    sd["fc.weight"] = np.zeros((1008, 2048), np.float32)
    sd["fc.bias"] = np.zeros(1008, np.float32)
    sd["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0)
    out = convert_inception.convert_state_dict(sd)
    assert set(out) == set(tensors)
    sd["Mixed_5b.surprise"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unexpected key 'Mixed_5b.surprise'"):
        convert_inception.convert_state_dict(sd)


class _FakeTensor:
    def __init__(self, value):
        self.value = value

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.value


def test_converter_command_with_stand_in_torch(tensors, tmp_path, monkeypatch):
    src, dst = tmp_path / "pt_inception.pth", tmp_path / "inception_fid.npz"
    src.write_bytes(b"not read by the stand-in")
    fake_torch = types.ModuleType("torch")
    state = {k: _FakeTensor(v) for k, v in tensors.items()}
    state["fc.weight"] = _FakeTensor(np.zeros((1008, 2048), np.float32))
    fake_torch.load = lambda path, map_location, weights_only: state
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    fv = flags.FlagValues()
    convert_inception.define_flags(fv)
    fv(["convert_inception", f"--src={src}", f"--dst={dst}"])
    convert_inception.main(["convert_inception"], flag_values=fv)
    loaded = inception.read_npz(dst)
    np.testing.assert_array_equal(loaded["Mixed_7c.branch_pool.conv.weight"],
                                  tensors["Mixed_7c.branch_pool.conv.weight"])


def test_converter_without_torch_explains(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="needs PyTorch"):
        convert_inception.convert(str(tmp_path / "x.pth"), str(tmp_path / "y.npz"))
