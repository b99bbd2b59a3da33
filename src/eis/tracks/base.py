"""The track contract: what a tool is asked, and how its answer is scored against the sealed truth.

Tracks are the only code that calls ``Case.truth()``. One cell = one case x one tool x one track; the
runner calls ``Track.run`` for each cell and stores the returned ``CellResult``. Aggregation across cases
(means with bootstrap CIs, AUROC over a population, ...) happens in ``Track.summarize`` from the stored
rows, so the report needs only the store.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from eis.registry import Registry

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd
    from matplotlib.figure import Figure

    from eis.cache import Prep
    from eis.tools.base import Tool
    from eis.zoo.case import Case


@dataclasses.dataclass
class CellResult:
    """What one cell produced.

    scores: per-case summary metrics (e.g. the mean over inputs), the numbers a leaderboard shows.
    items: per-item values (per input, per model) kept for bootstrap confidence intervals.
    extras: JSON-serialisable details (e.g. the flagged target class, an anomaly index).
    gallery: a few small images (H, W) or (C, H, W) float arrays in [0, 1] for the HTML report.
    """

    scores: dict[str, float]
    flaw: str = ""  # the case's flaw kind (from the truth), for per-flaw-type breakdowns in the report
    items: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    gallery: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Track:
    """Base class for benchmark tracks."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"  # bump when scoring changes: part of the results cache key
    family: ClassVar[str] = ""  # the tool family this track runs
    headline: ClassVar[str] = ""  # the metric a leaderboard sorts by
    higher_is_better: ClassVar[bool] = True
    summary: ClassVar[str] = ""

    def applies_to(self, case: Case) -> bool:
        """Whether this track has anything to ask of ``case`` (e.g. localize needs a localized flaw)."""
        raise NotImplementedError

    def run(self, case: Case, tool: Tool, *, seed: int = 0) -> CellResult:
        """Ask ``tool`` about ``case`` and score its answer against ``case.truth()``.

        A track whose :meth:`partners` names cases also receives them, as ``run(..., partners=cases)``.
        """
        raise NotImplementedError

    def partners(self, case: Case, cases: Sequence[Case], tool: Tool) -> tuple[Case, ...]:
        """Other cases of the same run that ``case``'s cells with ``tool`` need (default: none).

        E.g. the sanity track's label-permuted twin, the detect track's training population for a detector
        that learns. Chosen from the run's own ``cases``, never from whatever happens to be cached, and
        part of the cell's key: the same suite gives the same pairing on every machine.
        """
        return ()

    def prepare(self, case: Case, tool: Tool, partners: Sequence[Case] = ()) -> list[Prep]:
        """Shared one-off work the cell of ``case`` x ``tool`` needs (default: none); see
        :class:`eis.cache.Prep`."""
        return []

    def summarize(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Leaderboard from this track's stored cells.

        ``rows`` has one row per cell with columns: case_id, case_name, dataset, arch, flaw, tool, family,
        control (bool), track, status ("ok" | "failed" | "not applicable": the tool refused the case),
        error, runtime_s, peak_mem_mb, scores (dict), items (dict of lists), extras (dict). Returns a long
        table with columns: tool, control, flaw ("all" for pooled, else one flaw kind), metric, mean, lo, hi
        (bootstrap 95% CI), n, and verdict (a short string such as "beats the edge detector: yes", or ""
        where none applies).
        """
        raise NotImplementedError

    def figures(self, rows: pd.DataFrame) -> list[tuple[str, Figure]]:
        """Track-specific plots for the HTML report, as (caption, matplotlib Figure); default none."""
        return []


def standalone(case: Case) -> bool:
    """Whether ``case`` is a suite's own case rather than a member of a detection population (populations
    exist for the detect track; the per-case tracks skip them so a suite's run stays affordable)."""
    return case.meta.get("population") is None


TRACKS: Registry[type[Track]] = Registry("track")


def register_track(cls: type[Track]) -> type[Track]:
    """Class decorator: register a track under ``cls.name``."""
    TRACKS.register(cls.name, cls)
    return cls


# -- helpers the tracks share for cell extras and stored rows ---------------------------------------------
def jsonable(value: Any) -> Any:
    """Plain JSON types for a cell's extras (tensors and numpy scalars unwrapped; non-finite floats: None)."""
    import torch

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def stored_dict(value: Any) -> dict:
    """A stored dict column value (a dict, or JSON text when the store serialised it; empty: {})."""
    if isinstance(value, str):
        return json.loads(value) if value else {}
    return dict(value) if isinstance(value, dict) else {}


def fill_flaw(rows: pd.DataFrame) -> pd.DataFrame:
    """A failed cell may carry no flaw kind; take it from another cell of the same case where known.

    Cells whose flaw stays unknown count only in the pooled "all" rows.
    """
    flaw = rows["flaw"].fillna("").astype(str)
    known = dict(zip(rows["case_id"][flaw != ""], flaw[flaw != ""], strict=True))
    rows = rows.copy()
    rows["flaw"] = [f or known.get(c, "") for c, f in zip(rows["case_id"], flaw, strict=True)]
    return rows
