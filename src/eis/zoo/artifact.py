"""Case artifacts on disk: weights in safetensors, everything else JSON, the truth kept apart.

Layout of ``EIS_HOME/zoo/<case id>/``::

    model.safetensors        weights (what a tool may see)
    manifest.json            visible metadata: identical keys for every case of a population
    truth/truth.json         sealed: the flaw spec, measured bars (read only by tracks)
    truth/truth.safetensors  sealed: trigger picture and mask

The manifest lists the SHA-256 of every other file; a mismatch means a corrupt or partly written artifact,
which is rebuilt, never loaded. Artifacts are written to a temporary folder and renamed into place, so a
killed build leaves nothing half-written under the final name. Loading never unpickles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from eis.cache import atomic_dir, sha256
from eis.errors import EisError
from eis.paths import zoo_dir

MANIFEST_SCHEMA = 1
FILES = ("model.safetensors", "truth/truth.json", "truth/truth.safetensors")
CASE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")  # a spec's hash: never a path, never hidden
_PACKED_NAME = re.compile(r"(truth/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # a file at the top or in truth/


class CorruptArtifact(EisError):
    """An artifact whose files do not match the hashes in its manifest."""


def case_dir(case_id: str) -> Path:
    """The artifact folder of ``case_id``: always a direct child of :func:`zoo_dir` (an id holding a path
    separator, ``..`` or a leading dot is refused in one line)."""
    if not isinstance(case_id, str) or CASE_ID_RE.fullmatch(case_id) is None:
        raise EisError(
            f"case id {case_id!r} is not valid; a case id is 1-128 letters, digits, '_' or '-' (a hash)"
        )
    return zoo_dir() / case_id


def write_artifact(
    case_id: str,
    model: torch.nn.Module,
    visible: dict[str, Any],
    truth: dict[str, Any],
    truth_tensors: dict[str, torch.Tensor],
    *,
    replace: bool = False,
) -> Path:
    """Write a complete artifact atomically; returns its folder.

    When another process finished the same artifact first, its copy is kept (the bytes are the same);
    ``replace`` swaps in the new one instead (a forced rebuild).
    """
    final = case_dir(case_id)
    with atomic_dir(final, replace=replace) as tmp:
        (tmp / "truth").mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        (tmp / "truth" / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True))
        save_file(
            {k: v.contiguous() for k, v in truth_tensors.items()}, str(tmp / "truth" / "truth.safetensors")
        )
        manifest = {**visible, "schema": MANIFEST_SCHEMA, "files": {f: sha256(tmp / f) for f in FILES}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return final


def read_manifest(root: Path) -> dict[str, Any]:
    """The visible manifest, after checking every file against its recorded hash."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptArtifact(
            f"artifact {root.name}: unreadable manifest ({exc.__class__.__name__})"
        ) from None
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise CorruptArtifact(
            f"artifact {root.name}: manifest schema {manifest.get('schema')!r} is not "
            f"{MANIFEST_SCHEMA}; rebuild it"
        )
    for name in FILES:
        path = root / name
        if not path.is_file() or sha256(path) != files.get(name):
            raise CorruptArtifact(f"artifact {root.name}: {name} is missing or does not match its hash")
    return manifest


def load_weights(root: Path) -> dict[str, torch.Tensor]:
    return load_file(str(root / "model.safetensors"))


def load_truth(root: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    return json.loads((root / "truth" / "truth.json").read_text()), load_file(
        str(root / "truth" / "truth.safetensors")
    )


def pack(root: Path) -> dict[str, bytes]:
    """An artifact's files as bytes (manifest included), to carry it to another machine: the image
    artifact's files and any other file its manifest hashes (a language-model case's config, tokenizer)."""
    manifest = read_manifest(root)  # never ship a corrupt artifact
    names = dict.fromkeys([*FILES, *manifest["files"], "manifest.json"])
    return {name: (root / name).read_bytes() for name in names}


def unpack(case_id: str, files: dict[str, bytes]) -> Path:
    """Write a packed artifact under this machine's zoo folder (atomically; an intact copy is kept)."""
    final = case_dir(case_id)
    if final.is_dir():
        try:
            read_manifest(final)
            return final
        except CorruptArtifact:
            pass
    try:
        hashed = set(json.loads(files["manifest.json"])["files"])
    except (KeyError, ValueError, TypeError):
        hashed = set()
    unknown = sorted(set(files) - {*FILES, *hashed, "manifest.json"})
    bad = [n for n in hashed if not _PACKED_NAME.fullmatch(n)]
    if unknown or bad:
        name = (unknown or bad)[0]
        raise CorruptArtifact(f"artifact {case_id}: unexpected file {name!r} in a packed artifact")
    with atomic_dir(final, replace=final.exists()) as tmp:
        (tmp / "truth").mkdir()
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        read_manifest(tmp)
        if any(sha256(tmp / n) != json.loads(files["manifest.json"])["files"][n] for n in hashed):
            raise CorruptArtifact(f"artifact {case_id}: a packed file does not match its hash")
    return final
