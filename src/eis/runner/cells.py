"""Cells: the expansion of cases x tools x tracks, with the cache key and the seed of each cell.

Cache key = sha256 of (case id, tool name, tool settings as canonical JSON, track name, track version, the
ids of the cell's partner cases, if any, and the track's settings where they differ from its defaults, e.g.
a suite's ``[tracks.localize] n_inputs = 100``): a finished cell is never recomputed unless asked, and a
cell run with other track settings is another cell.
The seed depends on the case and the track only (not on the tool and never on the order or the worker),
so every tool on a case is asked about the same inputs and the results are identical whatever the worker
count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

from eis.errors import EisError, unknown
from eis.results.store import dumps
from eis.tools.base import TOOLS, Tool, list_tools
from eis.tracks.base import TRACKS, Track

DEFAULT_TRACKS = ["localize", "sanity", "faithfulness", "detect", "synthesize", "circuits", "repair"]
DEFAULT_TRACKS += ["challenge"]  # the mechanist challenge: smoke holds two rule cases
DEFAULT_TRACKS += ["features"]  # known sparse dictionaries: smoke holds two feature cases
DEFAULT_TRACKS += ["lm_trigger"]  # trigger recovery: smoke holds a backdoored LM and its clean twin
DEFAULT_TRACKS += ["lm_detect"]  # LM backdoor detection: smoke holds a small LM detection population
DEFAULT_TRACKS += ["lm_elicit"]  # elicitation: smoke holds a password-locked LM
DEFAULT_TRACKS += ["feature_steering", "feature_concepts", "feature_ablation"]  # about 30 s on smoke
DEFAULT_TRACKS += ["feature_lm_steering"]  # about 90 s of cell time on smoke
DEFAULT_TRACKS += ["feature_usefulness"]  # 66 cells, about 10 min of cell time on smoke (ICA 30 s a cell)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work: ask ``tool`` (with ``settings_json``) about ``case`` under ``track``."""

    case: Any
    tool: str
    settings_json: str
    family: str
    control: bool
    track: str
    track_version: str
    key: str
    seed: int
    tool_obj: Tool | None = dataclasses.field(default=None, compare=False, repr=False)
    # other cases of the run that the cell needs (Track.partners)
    partners: tuple[Any, ...] = dataclasses.field(default=(), repr=False)
    # the track's constructor keywords that differ from its defaults, as canonical JSON
    track_settings_json: str = "{}"

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.settings_json)

    @property
    def track_settings(self) -> dict[str, Any]:
        return json.loads(self.track_settings_json)

    def label(self) -> str:
        return f"{self.track} · {self.tool} · {getattr(self.case, 'name', self.case.id)}"


def cell_key(
    case_id: str,
    tool: str,
    settings_json: str,
    track: str,
    track_version: str,
    partner_ids: Sequence[str] = (),
    track_settings_json: str = "{}",
) -> str:
    """The cache key of a cell (hex sha256). Default track settings leave the key as it was before tracks
    took settings, so stored cells stay valid; other settings nest the fields in a list of another shape,
    which no key without them can equal."""
    fields = [str(case_id), tool, settings_json, track, str(track_version), *map(str, partner_ids)]
    payload = json.dumps(fields if track_settings_json == "{}" else [fields, track_settings_json])
    return hashlib.sha256(payload.encode()).hexdigest()


def cell_seed(seed_id: str, track: str) -> int:
    """A 31-bit seed from a case's ``seed_id`` and a track, shared by every tool on that case and track.

    Zoo cases carry a ``seed_id`` that outlives zoo version bumps (``eis.zoo.Case.seed_id``); other case
    objects are seeded from their ``id``.
    """
    return int(hashlib.sha256(f"{seed_id}|{track}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def track_settings(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The checked constructor keywords of track ``name``, less those equal to the track's defaults.

    An unknown keyword, a value of the wrong type or one the track's constructor refuses is a one-line
    EisError naming the track, the key and what is valid.
    """
    cls = TRACKS.get(name)  # unknown name -> EisError listing the valid ones
    params = {
        p.name: p
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    if not isinstance(settings, Mapping):
        raise EisError(f"track {name!r}: settings must be a table of keywords, like n_inputs = 100")
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key not in params:
            raise EisError(f"track {name!r} has no setting {key!r}; valid: {', '.join(params) or '(none)'}")
        default = params[key].default
        want = _type_name(default)
        if want and not _same_type(value, default):
            raise EisError(f"track {name!r}: setting {key!r} must be {want}, got {value!r}")
        try:
            cls(**{key: value})
        except (EisError, TypeError, ValueError) as exc:
            raise EisError(f"track {name!r}: setting {key} = {value!r} is not valid: {exc}") from None
        if value != default:
            out[key] = value
    try:
        cls(**out)
    except (EisError, TypeError, ValueError) as exc:
        raise EisError(f"track {name!r}: settings {out!r} are not valid together: {exc}") from None
    return out


def checked_track_settings(settings: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """:func:`track_settings` of every track in ``settings`` (track name -> keywords)."""
    return {str(n): track_settings(str(n), s) for n, s in (settings or {}).items()}


def _type_name(default: Any) -> str:
    """What a setting with this default must be ("" where the default says nothing about it)."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    return ""


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def resolve_tracks(
    names: Sequence[str] | None, settings: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Track]:
    """Track instances for ``names`` (default: the registered ones among ``DEFAULT_TRACKS``), each built
    with its ``settings`` (constructor keywords; checked by :func:`track_settings`, for every track named
    there, selected or not)."""
    checked = checked_track_settings(settings)
    if names is None:
        names = [n for n in DEFAULT_TRACKS if n in TRACKS]
        if not names:
            raise EisError(
                f"none of the default tracks ({', '.join(DEFAULT_TRACKS)}) is registered; "
                f"choose with --tracks from: {', '.join(TRACKS.names()) or '(none)'}"
            )
    out = []
    for name in dict.fromkeys(names):
        out.append(
            TRACKS.get(name)(**checked.get(name, {}))
        )  # unknown name -> EisError listing the valid ones
    if not out:
        raise EisError(f"no track selected; valid: {', '.join(TRACKS.names())}")
    return out


def resolve_tools(tools: Sequence[str | Tool] | None, tracks: Sequence[Track]) -> dict[str, list[Tool]]:
    """Tools to run per track name: the track family's tools (all, or the chosen ones) plus its controls."""
    chosen: list[Tool] | None = None
    if tools is not None:
        valid = list_tools()
        chosen = []
        for t in tools:
            if isinstance(t, Tool):
                chosen.append(t)
            elif t not in valid:
                raise unknown("tool", t, valid)
            else:
                chosen.append(TOOLS.get(t)())
        families = {tr.family for tr in tracks}
        for t in chosen:
            if t.family not in families:
                raise EisError(
                    f"tool {t.name!r} (family {t.family!r}) is not run by the chosen tracks "
                    f"({', '.join(tr.name for tr in tracks)}: families {', '.join(sorted(families))})"
                )
    out: dict[str, list[Tool]] = {}
    for tr in tracks:
        if chosen is None:
            sel = [TOOLS.get(n)() for n in list_tools(family=tr.family)]
        else:
            sel = [t for t in chosen if t.family == tr.family]
            names = {t.name for t in sel}
            sel += [TOOLS.get(n)() for n in list_tools(family=tr.family, controls=True) if n not in names]
        out[tr.name] = sel
    return out


def expand(
    cases: Sequence[Any],
    tools: Sequence[str | Tool] | None = None,
    tracks: Sequence[str] | None = None,
    track_settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Cell]:
    """All cells (deduplicated by key); a track skips the cases it does not apply to. ``track_settings``:
    track name -> constructor keywords (e.g. a suite's ``[tracks.localize]`` table)."""
    checked = checked_track_settings(track_settings)
    track_objs = resolve_tracks(tracks, checked)
    per_track = resolve_tools(tools, track_objs)
    cells: dict[str, Cell] = {}
    for tr in track_objs:
        tset = dumps(checked.get(tr.name, {}))
        for case in cases:
            if not tr.applies_to(case):
                continue
            for tool in per_track[tr.name]:
                settings_json = dumps(tool.settings())
                partners = tuple(tr.partners(case, cases, tool))
                pids = [c.id for c in partners]
                key = cell_key(case.id, tool.name, settings_json, tr.name, tr.version, pids, tset)
                cells.setdefault(
                    key,
                    Cell(
                        case=case,
                        tool=tool.name,
                        settings_json=settings_json,
                        family=tool.family,
                        control=bool(tool.control),
                        track=tr.name,
                        track_version=str(tr.version),
                        key=key,
                        seed=cell_seed(getattr(case, "seed_id", case.id), tr.name),
                        tool_obj=tool,
                        partners=partners,
                        track_settings_json=tset,
                    ),
                )
    return list(cells.values())
