"""Loading a user's model and data (eis.usermodel): every safe form, the pickle refusal, one-line errors."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from eis.errors import EisError
from eis.usermodel import Normalized, check_compatible, load_examples, load_model, save_weights

ARCH_SRC = textwrap.dedent(
    """
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
            self.head = nn.Linear(4, classes)

        def forward(self, x):
            return self.head(self.conv(x).relu().mean((2, 3)))

    def make(classes=3):
        return Tiny(classes)
    """
)


@pytest.fixture
def arch_file(tmp_path):
    f = tmp_path / "tinyarch_um.py"
    f.write_text(ARCH_SRC)
    return f


def test_safetensors_torchscript_export_and_pickle_give_the_same_outputs(arch_file, tmp_path):
    torch.manual_seed(0)
    from eis.usermodel import load_factory

    ref = load_factory(f"{arch_file}:make")(classes=3).eval()
    x = torch.rand(5, 1, 12, 12)
    want = ref(x)
    save_weights(ref, tmp_path / "w.safetensors")
    m = load_model(tmp_path / "w.safetensors", f"{arch_file}:make", {"classes": 3}, device="cpu")
    assert not m.training
    torch.testing.assert_close(m(x), want)
    torch.jit.script(ref).save(str(tmp_path / "m.ts"))
    torch.testing.assert_close(load_model(tmp_path / "m.ts", device="cpu")(x), want)
    torch.export.save(torch.export.export(ref, (x,)), str(tmp_path / "m.pt2"))
    torch.testing.assert_close(load_model(tmp_path / "m.pt2", device="cpu")(x), want)
    torch.save(ref, tmp_path / "m.pt")
    with pytest.raises(EisError, match="--trust-pickle.*safe forms"):
        load_model(tmp_path / "m.pt")
    m = load_model(tmp_path / "m.pt", f"{arch_file}:make", trust_pickle=True, device="cpu")
    torch.testing.assert_close(m(x), want)


def test_weights_that_do_not_fit_name_the_keys(arch_file, tmp_path):
    save_file(
        {"conv.weight": torch.zeros(4, 1, 3, 3), "extra.bias": torch.zeros(2)}, tmp_path / "w.safetensors"
    )
    with pytest.raises(EisError) as err:
        load_model(tmp_path / "w.safetensors", f"{arch_file}:make")
    msg = str(err.value)
    assert "\n" not in msg and "conv.bias" in msg and "head.weight" in msg and "extra.bias" in msg
    with pytest.raises(EisError, match="has no function 'nope'.*make"):
        load_model(tmp_path / "w.safetensors", f"{arch_file}:nope")
    with pytest.raises(EisError, match="cannot import module"):
        load_model(tmp_path / "w.safetensors", "no_such_pkg_xyz.mod:make")
    with pytest.raises(EisError, match="--arch"):
        load_model(tmp_path / "w.safetensors")


def test_image_folders_and_array_files(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("0", "1", "10"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    x, y, names = load_examples(tmp_path / "data")
    assert x.shape == (6, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert sorted(y.tolist()) == [0, 0, 1, 1, 10, 10]  # integer folder names are class indices
    assert names[0] == "0/0.png"
    x2, _, _ = load_examples(tmp_path / "data", size=5)
    assert x2.shape == (6, 1, 5, 5)
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(flat / "a.png")
    xf, yf, nf = load_examples(flat, labelled=False)
    assert xf.shape == (1, 3, 8, 8) and yf is None and nf == ["a.png"]
    with pytest.raises(EisError, match="no labels"):
        load_examples(flat)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EisError, match="holds no images"):
        load_examples(tmp_path / "empty")
    np.savez(tmp_path / "d.npz", x=(x.numpy() * 255).astype(np.uint8), y=y.numpy())
    xn, yn, nn_ = load_examples(tmp_path / "d.npz")
    assert nn_ is None and torch.equal(yn, y) and torch.allclose(xn, x, atol=1 / 255)
    save_file({"x": x * 3}, tmp_path / "bad.safetensors")
    with pytest.raises(EisError, match=r"in \[0, 1\]"):
        load_examples(tmp_path / "bad.safetensors", labelled=False)


def test_normalized_and_compatibility_checks(arch_file):
    from eis.usermodel import load_factory

    m = load_factory(f"{arch_file}:make")(classes=3).eval()
    x = torch.rand(4, 1, 10, 10)
    w = Normalized(m, [0.5], [0.25])
    torch.testing.assert_close(w(x), m((x - 0.5) / 0.25))
    assert check_compatible(m, x, torch.tensor([0, 1, 2, 2])) == 3
    with pytest.raises(EisError, match="labels span 0..5 but the model has 3 classes"):
        check_compatible(m, x, torch.tensor([0, 1, 5, 2]))
    with pytest.raises(EisError, match=r"rejects images shaped \(3, 10, 10\)"):
        check_compatible(m, torch.rand(2, 3, 10, 10))
    with pytest.raises(EisError, match="one value per channel"):
        Normalized(nn.Identity(), [0.5, 0.5], [1.0])
