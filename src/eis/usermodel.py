"""Load a user's own model and data: the entry point for applying eis to a model eis did not build.

Models, safest first (nothing is unpickled unless the user says so, and the user's code is imported only
because they named it):

- weights in ``.safetensors`` + the architecture as ``package.module:function`` or
  ``path/to/file.py:function`` (a factory returning an ``nn.Module``, called with ``arch_kwargs``);
- a TorchScript archive (``torch.jit.save``) or a ``torch.export`` program (``.pt2``);
- a whole pickled model (``torch.save(model)``) only with ``trust_pickle=True``.

Examples: an image folder (``root/<class>/<image>``; sub-folders named by integers are those class
indices, otherwise the sorted names are), a flat folder of unlabelled images, or a ``.safetensors`` /
``.npz`` file holding ``x`` (N, C, H, W) in [0, 1] (uint8 is divided by 255) and optionally ``y``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eis.errors import EisError

MAX_SIZE = 4096  # --size: pixels per side (a typo such as 22400 would ask for gigabytes per image)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SAFE_FORMS = (
    "safe forms: .safetensors weights + --arch package.module:function (or path/to/file.py:function), "
    "a TorchScript archive, or a torch.export .pt2 program"
)


# ------------------------------------------------------------------ models


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    *,
    trust_pickle: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """The user's model in eval mode on ``device`` (default: CUDA when present, else CPU)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EisError(
            f"model file {str(path)!r} does not exist; expected a .safetensors, TorchScript or .pt2 file"
        )
    dev = torch.device(device) if device is not None else _default_device()
    if path.suffix == ".safetensors":
        if not arch:
            raise EisError(
                f"{path.name!r} holds weights only; name the architecture with --arch "
                "package.module:function or path/to/file.py:function"
            )
        factory = load_factory(arch)
        try:
            model = factory(**(arch_kwargs or {}))
        except (Exception, SystemExit) as exc:  # the user's factory may raise anything on its arguments
            raise EisError(
                f"factory {arch!r} failed on --arch-kwargs {arch_kwargs or {}}: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise EisError(f"factory {arch!r} returned {type(model).__name__}, expected a torch.nn.Module")
        _load_weights(model, path, arch)
    elif path.suffix == ".pt2":
        return _load_exported(path).to(dev)  # an exported graph is fixed: it has no train/eval mode
    elif _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a damaged archive: torch raises several types
            raise EisError(
                f"{path.name!r} is not a readable TorchScript archive: {_first_line(exc)}"
            ) from None
    else:
        model = _load_pickle(path, arch, trust_pickle)
    return model.to(dev).eval()


def load_factory(spec: str) -> Any:
    """Import ``package.module:function`` or ``path/to/file.py:function`` and return the function."""
    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise EisError(f"architecture {spec!r} must read package.module:function or path/to/file.py:function")
    if mod_name.endswith(".py") or "/" in mod_name or "\\" in mod_name:
        module = _import_file(Path(mod_name).expanduser())
    else:
        try:
            module = importlib.import_module(mod_name)
        except (Exception, SystemExit) as exc:  # not found, a relative name like ".", or its code failed
            raise EisError(
                f"cannot import module {mod_name!r} for --arch ({_first_line(exc)}); "
                "give package.module:function on the Python path or path/to/file.py:function"
            ) from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise EisError(
            f"{mod_name!r} has no function {fn_name!r}; callables there: {', '.join(public) or '(none)'}"
        )
    return fn


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write ``model.state_dict()`` as safetensors (tied tensors are written once per name)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(Path(path).expanduser()))


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _import_file(file: Path) -> Any:
    """Import a user's Python file as a module named after its stem (so pickled classes resolve)."""
    if not file.is_file() or file.suffix != ".py":
        raise EisError(f"architecture file {str(file)!r} does not exist; expected path/to/file.py:function")
    name = file.stem
    known = sys.modules.get(name)
    if known is not None and Path(getattr(known, "__file__", "") or "").resolve() == file.resolve():
        return known  # imported already: reuse it, so its classes stay the same objects
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise EisError(f"cannot import {str(file)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code failed on import: say where, in one line
        sys.modules.pop(name, None)
        raise EisError(f"importing {str(file)!r} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return module


def _load_weights(model: nn.Module, path: Path, arch: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise EisError(f"{path.name!r} is not a readable safetensors file: {_first_line(exc)}") from None
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing or unexpected:
        raise EisError(
            f"weights in {path.name!r} do not fit {arch!r}: missing keys {_few(missing)}, "
            f"unexpected keys {_few(unexpected)}"
        )
    bad = [k for k in want if tuple(want[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise EisError(
            f"weights in {path.name!r} do not fit {arch!r}: {len(bad)} shape mismatch(es), e.g. {k!r} is "
            f"{tuple(state[k].shape)} in the file but {tuple(want[k].shape)} in the model"
        )
    model.load_state_dict(state)


def _few(keys: Sequence[str], n: int = 5) -> str:
    if not keys:
        return "(none)"
    shown = ", ".join(map(repr, keys[:n]))
    return f"[{shown}{', ...' if len(keys) > n else ''}] ({len(keys)})"


def _is_torchscript(path: Path) -> bool:
    """TorchScript zips hold ``<name>/code/`` and ``constants.pkl``; torch.save zips do not."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:  # its end record reads, its directory does not
        raise EisError(
            f"{path.name!r} is a damaged zip archive ({_first_line(exc)}); expected a TorchScript archive "
            "or, with --trust-pickle, a torch.save file"
        ) from None
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


class _Kept(logging.Handler):
    """Keeps log records instead of printing them (torch.export logs a traceback before it raises)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _load_exported(path: Path) -> nn.Module:
    log, kept = logging.getLogger("torch.export"), _Kept()
    handlers, propagate = log.handlers[:], log.propagate
    log.handlers, log.propagate = [kept], False  # torch gives this logger its own stderr handler
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:  # torch raises several types for a malformed archive
        cause = next((r.exc_info[1] for r in kept.records if r.exc_info and r.exc_info[1]), exc)
        raise EisError(
            f"{path.name!r} is not a readable torch.export program: {_first_line(cause)}"
        ) from None
    finally:
        log.handlers, log.propagate = handlers, propagate


def _load_pickle(path: Path, arch: str | None, trust_pickle: bool) -> nn.Module:
    if not trust_pickle:
        raise EisError(
            f"{path.name!r} is not safetensors, TorchScript or .pt2; loading it as a pickle could run "
            f"arbitrary code, so pass --trust-pickle if you trust its source ({SAFE_FORMS})"
        )
    if arch:  # make the user's classes importable by the unpickler
        mod_name = arch.rpartition(":")[0]
        if mod_name.endswith(".py") or "/" in mod_name:
            _import_file(Path(mod_name).expanduser())
        else:
            load_factory(arch)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling raises whatever the pickled code raises
        raise EisError(
            f"unpickling {path.name!r} failed: {type(exc).__name__}: {_first_line(exc)} "
            "(pass --arch naming the module that defines the model's class)"
        ) from None
    if not isinstance(obj, nn.Module):
        raise EisError(
            f"{path.name!r} holds a {type(obj).__name__}, not a model; save a state dict as .safetensors "
            "and name the architecture with --arch"
        )
    return obj


# ------------------------------------------------------------------ data


def load_examples(
    path: str | Path, *, size: int | None = None, labelled: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """Images ``x`` (N, C, H, W) float32 in [0, 1], labels ``y`` (N,) int64 or None, file names or None.

    ``labelled=True`` requires labels (class sub-folders, or ``y`` in the file); ``size`` resizes to
    ``size`` x ``size`` (bilinear), otherwise every image must already have one size.
    """
    path = Path(path).expanduser()
    if size is not None and (
        not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE
    ):
        raise EisError(f"size must be a number of pixels per side in 1..{MAX_SIZE}; got {size!r}")
    if path.is_dir():
        x, y, names = _read_folder(path, size)
    elif path.is_file() and path.suffix in (".safetensors", ".npz"):
        x, y = _read_array_file(path)
        names = None
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    else:
        raise EisError(
            f"data {str(path)!r} is not an image folder or a .safetensors / .npz file with x (N, C, H, W)"
        )
    if labelled and y is None:
        raise EisError(
            f"{str(path)!r} has no labels; use one sub-folder per class or store y next to x in the file"
        )
    return x, y, names


def _read_folder(root: Path, size: int | None) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    from PIL import Image

    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if subdirs:
            if all(p.name.isdecimal() for p in subdirs):  # isdigit() also holds for "²", which int() refuses
                label_of = {p.name: int(p.name) for p in subdirs}
            else:
                label_of = {p.name: k for k, p in enumerate(subdirs)}
            files = [(f, label_of[d.name]) for d in subdirs for f in sorted(d.iterdir()) if _is_image(f)]
        else:
            files = [(f, -1) for f in sorted(root.iterdir()) if _is_image(f)]
    except OSError as exc:
        raise EisError(f"cannot list image folder {str(root)!r}: {_first_line(exc)}") from None
    if not files:
        raise EisError(
            f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_SUFFIXES)}); expected "
            "root/<class>/<image> or root/<image>"
        )
    if subdirs and max(lab for _, lab in files) >= 2**31:
        raise EisError(
            f"class folder {max(label_of, key=lambda k: label_of[k])!r} in {str(root)!r} is not a class "
            "index; integer folder names must be class indices 0..2**31-1"
        )
    images = [_open_image(f, root) for f, _ in files]
    gray = all(im.mode in ("1", "L", "I", "I;16", "F") for im in images)
    arrays = []
    for (f, _), im in zip(files, images, strict=True):
        try:
            im = im.convert("L" if gray else "RGB")
            if size is not None:
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
        except Exception as exc:  # Pillow raises several types for a file it cannot convert
            raise _unreadable(f, root, exc) from None
        arrays.append(a[None] if gray else a.transpose(2, 0, 1))
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise EisError(
            f"images in {str(root)!r} differ in size ({shapes[0][1:]} vs {shapes[-1][1:]}); pass --size"
        )
    x = torch.from_numpy(np.stack(arrays))
    y = torch.tensor([lab for _, lab in files]) if subdirs else None
    names = [str(f.relative_to(root)) for f, _ in files]
    return x, y, names


def _open_image(f: Path, root: Path) -> Any:
    """The decoded image in ``f`` (file closed again); one-line EisError when it is not a readable image."""
    from PIL import Image

    try:
        with Image.open(f) as im:
            im.load()
            return im
    except Exception as exc:  # empty, truncated, not an image, unreadable: Pillow raises several types
        raise _unreadable(f, root, exc) from None


def _unreadable(f: Path, root: Path, exc: BaseException) -> EisError:
    return EisError(
        f"{str(f.relative_to(root))!r} in image folder {str(root)!r} is not a readable image "
        f"({type(exc).__name__}: {_first_line(exc)}); remove it or replace it with a PNG, JPEG, ... file"
    )


def _is_image(f: Path) -> bool:
    return f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES


def _read_array_file(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    name = repr(path.name)
    if path.suffix == ".npz":
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as exc:  # not a zip, truncated, pickled: numpy and zipfile raise several types
            raise EisError(f"{name} is not a readable .npz of plain arrays: {_first_line(exc)}") from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise EisError(f"{name} holds one bare array, not named ones; write np.savez(path, x=x, y=y)")
        try:
            with loaded as z:
                arrays = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        except Exception as exc:  # a corrupt member, or one torch cannot hold (strings, dates, objects)
            raise EisError(
                f"{name} is not a readable .npz of plain numeric arrays: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from None
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            arrays = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise EisError(f"{name} is not a readable safetensors file: {_first_line(exc)}") from None
    if "x" not in arrays:
        raise EisError(f"{name} has no array 'x'; found {sorted(arrays)}; expected x (N, C, H, W) and y")
    x = arrays["x"]
    if x.ndim != 4 or min(x.shape) == 0:
        raise EisError(f"x in {name} is shaped {tuple(x.shape)}; expected (N, C, H, W), none of them 0")
    if x.is_complex() or not (x.is_floating_point() or x.dtype in _INTEGER_DTYPES):
        raise EisError(f"x in {name} is {x.dtype}; expected real numbers in [0, 1] (float, int, bool), uint8")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if not torch.isfinite(x).all() or float(x.min()) < 0 or float(x.max()) > 1:
        raise EisError(f"x in {name} must be images in [0, 1] (or uint8); got [{x.min():.3g}, {x.max():.3g}]")
    y = arrays.get("y")
    return x, None if y is None else _labels(y, x.shape[0], name)


def _labels(y: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """``y`` as int64 class labels: n whole numbers in 0..2**31-1 (floats like 3.0 and bools count)."""
    ok = y.ndim == 1 and y.shape[0] == n and (y.is_floating_point() or y.dtype in _INTEGER_DTYPES)
    if ok:
        v = y.double()
        ok = bool(torch.isfinite(v).all() & (v == v.round()).all() & (v >= 0).all() & (v < 2**31).all())
    if not ok:
        raise EisError(f"y in {name} must be {n} whole labels in 0..2**31-1; got {tuple(y.shape)} {y.dtype}")
    return y.long()


_INTEGER_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
                   torch.uint32, torch.uint64)  # fmt: skip


# ------------------------------------------------------------------ glue


class Normalized(nn.Module):
    """``model((x - mean) / std)``: tools feed images in [0, 1], the model gets its own normalisation."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        m, s = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        ok = m.ndim == 1 and s.shape == m.shape and m.numel() > 0 and bool((s > 0).all())
        if not ok or not bool(torch.isfinite(m).all() & torch.isfinite(s).all()):
            raise EisError(
                f"mean and std need one value per channel (finite, std > 0); got {list(mean)}, {list(std)}"
            )
        self.model = model
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.register_buffer("mean", m.view(1, -1, 1, 1).to(dev))
        self.register_buffer("std", s.view(1, -1, 1, 1).to(dev))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def device_of(model: nn.Module) -> torch.device:
    """Where the model runs: its first parameter's device, else its first buffer's (a ``torch.export``
    program may hold only buffers), else the CPU."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def check_compatible(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> int:
    """Run the model on two of ``x``; return its class count K. One-line errors when it rejects the
    images or returns something other than (N, K) logits, or when a label is outside 0..K-1."""
    probe = x[:2].to(device_of(model))
    try:
        with torch.no_grad():
            out = model(probe)
    except Exception as exc:  # the user's model may raise anything on a wrong shape
        raise EisError(
            f"the model rejects images shaped {tuple(x.shape[1:])} (C, H, W): {type(exc).__name__}: "
            f"{_first_line(exc)}; pass --size or data of the shape it was trained on"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != probe.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EisError(
            f"the model returned {shape} for {probe.shape[0]} images; expected (N, classes) logits"
        )
    k = int(out.shape[1])
    if k < 2:
        raise EisError(f"the model has {k} output; eis needs a classifier with at least 2 classes")
    if y is not None and y.numel() and (int(y.max()) >= k or int(y.min()) < 0):
        raise EisError(
            f"labels span {int(y.min())}..{int(y.max())} but the model has {k} classes (0..{k - 1}); "
            "check the class sub-folders"
        )
    return k
