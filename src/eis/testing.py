"""The shared tool contract, in the spirit of scikit-learn's ``check_estimator``.

Every registered attribution and circuit tool must pass :func:`check_tool`; so can yours::

    from eis.testing import check_tool
    report = check_tool("saliency")            # or an AttributionTool instance
    print(report)                              # which checks ran, what was refused and why

Repair methods have their own check, :func:`check_repair_tool` (same report, same spirit).

A violation raises ``AssertionError`` naming the tool, the setting (arch, input shape) and the check.
A tool may refuse an architecture or batch size it cannot handle correctly by raising
:class:`eis.errors.ToolRefusal` with a non-empty message; the refusal is recorded in the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from eis.errors import EisError, ToolRefusal
from eis.tools.base import AttributionTool, make_tool
from eis.tools.circuits.base import CircuitScores, CircuitTask, CircuitTool
from eis.zoo.archs import build_arch

#: (arch, channels, side) settings every tool is checked on: both zoo archs on both zoo input shapes.
DEFAULT_SETTINGS: tuple[tuple[str, int, int], ...] = (
    ("cnn", 1, 16), ("cnn", 3, 32), ("resnet", 1, 16), ("resnet", 3, 32),
)  # fmt: skip
NUM_CLASSES = 10


@dataclasses.dataclass
class ToolReport:
    """What :func:`check_tool` found: checks passed and refusals (setting -> message)."""

    tool: str
    passed: list[str] = dataclasses.field(default_factory=list)
    refusals: dict[str, str] = dataclasses.field(default_factory=dict)

    def refused(self, arch: str) -> bool:
        """True when the tool refused every setting of ``arch``."""
        keys = [k for k in self.refusals if k.startswith(f"{arch} ")]
        return bool(keys) and not any(p.startswith(f"{arch} ") for p in self.passed)

    def __str__(self) -> str:
        lines = [f"{self.tool}: {len(self.passed)} checks passed, {len(self.refusals)} refusals"]
        lines += [f"  refused {k}: {v}" for k, v in self.refusals.items()]
        return "\n".join(lines)


def contract_model(arch: str, channels: int, side: int, seed: int = 0) -> nn.Module:
    """A zoo architecture with seeded random weights and non-trivial BatchNorm statistics, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_arch(arch, channels, NUM_CLASSES, side)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                with torch.no_grad():
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def check_tool(
    tool_or_name: Any,
    settings: dict[str, Any] | None = None,
    *,
    cases: Sequence[tuple[str, int, int]] = DEFAULT_SETTINGS,
    batch_size: int = 3,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ToolReport:
    """Check a tool against its family's contract; return a report, raise AssertionError on a violation.

    Circuit tools go to :func:`check_circuit_tool`, repair methods to :func:`check_repair_tool`, rule
    solvers to :func:`eis.tools.rule_recovery.contract.check_rule_tool`.

    ``settings`` are passed to :func:`eis.tools.base.make_tool` when a name is given (e.g. small
    ``n_samples`` to keep a test fast). ``cases`` are (arch, channels, side) triples.
    """
    from eis.tools.features.base import FeatureTool
    from eis.tools.features.contract import check_feature_tool
    from eis.tools.lm_trigger.base import TriggerTool
    from eis.tools.lm_trigger.contract import check_trigger_tool
    from eis.tools.repair.base import RepairTool
    from eis.tools.rule_recovery.base import RuleTool
    from eis.tools.rule_recovery.contract import check_rule_tool

    tool = make_tool(tool_or_name, **(settings or {})) if isinstance(tool_or_name, str) else tool_or_name
    if isinstance(tool, CircuitTool):
        return check_circuit_tool(tool, seed=seed, device=device)
    if isinstance(tool, RepairTool):
        return check_repair_tool(tool, seed=seed, device=device)
    if isinstance(tool, RuleTool):
        return check_rule_tool(tool, ToolReport(tool.name), seed=seed)
    if isinstance(tool, FeatureTool):
        return check_feature_tool(tool, ToolReport(tool.name), seed=seed)
    if isinstance(tool, TriggerTool):
        return check_trigger_tool(tool, ToolReport(tool.name), seed=seed)
    from eis.tools.lm_detect.base import LMDetectionTool
    from eis.tools.lm_detect.contract import check_lm_detect_tool

    if isinstance(tool, LMDetectionTool):
        return check_lm_detect_tool(tool, ToolReport(tool.name), seed=seed)
    from eis.tools.lm_elicit.base import ElicitTool
    from eis.tools.lm_elicit.contract import check_elicit_tool

    if isinstance(tool, ElicitTool):
        return check_elicit_tool(tool, ToolReport(tool.name), seed=seed)
    if not isinstance(tool, AttributionTool):
        raise EisError(f"check_tool checks attribution, circuit and repair tools, got {type(tool).__name__}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    report = ToolReport(tool.name or type(tool).__name__)
    gen = torch.Generator().manual_seed(seed)
    for i, (arch, c, side) in enumerate(cases):
        where = f"{arch} {c}x{side}x{side}"
        model = contract_model(arch, c, side, seed).to(dev)
        x = torch.rand((batch_size, c, side, side), generator=gen).to(dev)
        target = torch.arange(batch_size, device=dev) % NUM_CLASSES
        try:
            first = _call(tool, model, x, target, f"{report.tool} on {where}")
        except ToolRefusal as e:
            _assert(str(e).strip(), f"{report.tool} on {where}: ToolRefusal with an empty message")
            report.refusals[where] = str(e)
            continue
        _check_map(first, x, f"{report.tool} on {where}")
        again = _call(tool, model, x, target, f"{report.tool} on {where} (second call)")
        _assert(
            torch.allclose(first, again, rtol=1e-5, atol=1e-7, equal_nan=False),
            f"{report.tool} on {where}: two calls with the same seed differ "
            f"(max abs diff {(first - again).abs().max().item():.3g})",
        )
        report.passed += [f"{where} shape/dtype/finite", f"{where} deterministic", f"{where} no side effects"]
        try:
            one = _call(tool, model, x[:1], target[:1], f"{report.tool} on {where} (batch size 1)")
            _check_map(one, x[:1], f"{report.tool} on {where} (batch size 1)")
            report.passed.append(f"{where} batch size 1")
        except ToolRefusal as e:
            _assert(str(e).strip(), f"{report.tool} on {where} (batch 1): ToolRefusal with an empty message")
            report.refusals[f"{where} batch size 1"] = str(e)
        if i == 0:
            _check_bad_inputs(tool, model, x, target, f"{report.tool} on {where}")
            report.passed.append("bad inputs raise EisError")
    return report


def record_refusal(report: ToolReport, exc: ToolRefusal, where: str, case: str) -> ToolReport:
    """Record a tool's refusal on the contract's ``case`` in ``report``; an empty message violates the
    contract (a user would see no reason)."""
    _assert(str(exc).strip(), f"{where}: ToolRefusal with an empty message")
    report.refusals[case] = str(exc)
    return report


def _assert(cond: object, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def _call(
    tool: AttributionTool, model: nn.Module, x: torch.Tensor, target: torch.Tensor, where: str
) -> torch.Tensor:
    """One ``attribute`` call, asserting that neither the model nor the inputs changed."""
    x_before = x.clone()
    with _unchanged(model, where):
        out = tool.attribute(model, x, target)
    _assert(torch.equal(x, x_before) and not x.requires_grad, f"{where}: the inputs were modified")
    return out


def _check_map(out: object, x: torch.Tensor, where: str) -> None:
    _assert(isinstance(out, torch.Tensor), f"{where}: returned {type(out).__name__}, not a tensor")
    assert isinstance(out, torch.Tensor)
    _assert(
        tuple(out.shape) == tuple(x.shape),
        f"{where}: map shape {tuple(out.shape)}, expected the inputs' shape {tuple(x.shape)}",
    )
    _assert(out.is_floating_point(), f"{where}: map dtype {out.dtype} is not floating point")
    _assert(out.device == x.device, f"{where}: map on {out.device}, inputs on {x.device}")
    _assert(bool(torch.isfinite(out).all()), f"{where}: map holds NaN or inf")


def _check_bad_inputs(
    tool: AttributionTool, model: nn.Module, x: torch.Tensor, t: torch.Tensor, where: str
) -> None:
    bad = {
        "target out of range": (model, x, torch.full_like(t, NUM_CLASSES)),
        "negative target": (model, x, torch.full_like(t, -1)),
        "target of the wrong length": (model, x, t[:-1] if len(t) > 1 else t.repeat(2)),
        "3-D inputs": (model, x[0], t[:1]),
        "wrong channel count": (model, torch.cat([x, x[:, :1]], 1), t),
    }
    for what, (m, xb, tb) in bad.items():
        _expect_error(tool, m, xb, tb, f"{where}: {what}")
    model.train()
    try:
        _expect_error(tool, model, x, t, f"{where}: model in train mode")
    finally:
        model.eval()


def _expect_error(
    tool: AttributionTool, model: nn.Module, x: torch.Tensor, t: torch.Tensor, where: str
) -> None:
    try:
        with _unchanged(model, where):
            tool.attribute(model, x, t)
    except ToolRefusal:
        raise AssertionError(f"{where}: raised ToolRefusal; bad input needs a plain EisError") from None
    except EisError as e:
        msg = str(e).strip()
        _assert(msg and "\n" not in msg, f"{where}: EisError message not one line: {e!r}")
        return
    except Exception as e:  # noqa: BLE001 - any other exception is the violation we report
        raise AssertionError(f"{where}: raised {type(e).__name__} ({e}), expected EisError") from None
    raise AssertionError(f"{where}: no error raised, expected EisError")


@contextlib.contextmanager
def _unchanged(model: nn.Module, where: str) -> Iterator[None]:
    """Assert the block leaves weights, buffers, modes, grads, hooks and module attributes as they were."""
    before = _snapshot(model)
    yield
    after = _snapshot(model)
    for key in before:
        _assert(_same(before[key], after[key]), f"{where}: the tool changed the model's {key}")


def _snapshot(model: nn.Module) -> dict[str, Any]:
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return {
        "weights and buffers": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "train/eval mode": [m.training for m in model.modules()],
        "requires_grad flags": [p.requires_grad for p in model.parameters()],
        "parameter .grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [len(getattr(m, h)) for m in model.modules() for h in hook_dicts],
        "module attributes": [sorted(vars(m)) for m in model.modules()],
        "module structure": [n for n, _ in model.named_modules()],
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


#: (program, rotate + distractors) models every circuit tool is checked on: one layer with two heads (one a
#: distractor) in a rotated basis, and two compiled layers.
CIRCUIT_SETTINGS: tuple[tuple[str, bool], ...] = (("hist", True), ("sort_unique", False))


def contract_circuit_task(
    program: str, realistic: bool, ablation: str, n: int = 12, seed: int = 0
) -> CircuitTask:
    """A small circuit task on a shipped compiled program (no zoo artifact needed)."""
    from eis.zoo.circuits.model import HookedTransformer
    from eis.zoo.circuits.programs import load_program, sample_tokens
    from eis.zoo.circuits.truth import answer_mask
    from eis.zoo.circuits.variants import add_distractors, rotate

    prog = load_program(program)
    weights, cfg = dict(prog.weights), prog.config
    if realistic:
        weights, cfg = add_distractors(weights, cfg, seed=seed)
        weights = rotate(weights, cfg, seed=seed)
    model = HookedTransformer(cfg)
    model.load_state_dict(weights)
    model.eval()
    vocab = [prog.meta["input_encoding"][v] for v in prog.meta["vocab"]]
    clean, lengths = sample_tokens(vocab, cfg, n, seed, distinct=prog.meta["distinct"])
    corrupted, _ = sample_tokens(vocab, cfg, n, seed + 1, distinct=prog.meta["distinct"], lengths=lengths)
    with torch.no_grad():
        labels = model(clean).argmax(-1)
    mask = answer_mask(clean, cfg.pad_id, 1 + prog.meta["undefined_prefix"])
    return CircuitTask(model, clean, corrupted, torch.where(mask, labels, -1), ablation)


def check_circuit_tool(
    tool: CircuitTool, *, seed: int = 0, device: str | torch.device | None = None
) -> ToolReport:
    """Check a circuit tool: shapes, finiteness, determinism, no side effects, every ablation, bad inputs."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    report = ToolReport(tool.name or type(tool).__name__)
    for i, (program, realistic) in enumerate(CIRCUIT_SETTINGS):
        for ablation in ("zero", "mean", "resample"):
            where = f"{report.tool} on {program}{' (realistic)' if realistic else ''} / {ablation}"
            task = contract_circuit_task(program, realistic, ablation, seed=seed)
            task.model.to(dev)
            task.clean, task.corrupted, task.labels = (
                task.clean.to(dev),
                task.corrupted.to(dev),
                task.labels.to(dev),
            )
            try:
                first = _discover(tool, task, where)
            except ToolRefusal as e:
                _assert(str(e).strip(), f"{where}: ToolRefusal with an empty message")
                report.refusals[where] = str(e)
                continue
            _check_scores(first, task, where)
            again = _discover(tool, task, f"{where} (second call)")
            same = torch.equal(first.nodes, again.nodes) and torch.equal(first.edges, again.edges)
            _assert(same and first.circuit == again.circuit, f"{where}: two calls differ")
            report.passed += [f"{where} shapes/finite", f"{where} deterministic", f"{where} no side effects"]
        if i == 0:
            _check_bad_circuit_inputs(tool, contract_circuit_task(program, realistic, "resample", seed=seed))
            report.passed.append("bad inputs raise EisError")
    return report


def _discover(tool: CircuitTool, task: CircuitTask, where: str) -> CircuitScores:
    before = (task.clean.clone(), task.corrupted.clone(), task.labels.clone())
    with _unchanged(task.model, where):
        out = tool.discover(task)
    after = (task.clean, task.corrupted, task.labels)
    _assert(
        all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), f"{where}: inputs were modified"
    )
    return out


def _check_scores(out: object, task: CircuitTask, where: str) -> None:
    _assert(isinstance(out, CircuitScores), f"{where}: returned {type(out).__name__}, not CircuitScores")
    assert isinstance(out, CircuitScores)
    graph = task.graph
    for name, t, n in (("node", out.nodes, len(graph.components)), ("edge", out.edges, len(graph.edges))):
        _assert(
            isinstance(t, torch.Tensor) and tuple(t.shape) == (n,),
            f"{where}: {name} scores not shaped ({n},)",
        )
        _assert(
            t.is_floating_point() and bool(torch.isfinite(t).all()),
            f"{where}: {name} scores not finite floats",
        )
    if out.circuit is not None:
        _assert(set(out.circuit) <= set(graph.edges), f"{where}: the chosen circuit names unknown edges")


def _check_bad_circuit_inputs(tool: CircuitTool, task: CircuitTask) -> None:
    import dataclasses as dc

    where = f"{tool.name or type(tool).__name__}"
    bad = {
        "unknown ablation": dc.replace(task, ablation="bogus"),
        "corrupted of another shape": dc.replace(task, corrupted=task.corrupted[:-1]),
        "labels of another shape": dc.replace(task, labels=task.labels[:, :-1]),
        "no answer to explain": dc.replace(task, labels=torch.full_like(task.labels, -1)),
        "token out of range": dc.replace(task, clean=task.clean + task.model.cfg.d_vocab),
        "float tokens": dc.replace(task, clean=task.clean.float()),
    }
    for what, t in bad.items():
        try:
            with _unchanged(task.model, f"{where}: {what}"):
                tool.discover(t)
        except ToolRefusal:
            raise AssertionError(
                f"{where}: {what}: raised ToolRefusal; bad input needs a plain EisError"
            ) from None
        except EisError as e:
            _assert(str(e).strip() and "\n" not in str(e), f"{where}: {what}: EisError message not one line")
            continue
        except Exception as e:  # noqa: BLE001 - any other exception is the violation we report
            raise AssertionError(
                f"{where}: {what}: raised {type(e).__name__} ({e}), expected EisError"
            ) from None
        raise AssertionError(f"{where}: {what}: no error raised, expected EisError")
    task.model.train()
    try:
        try:
            tool.discover(task)
        except EisError:
            pass
        else:
            raise AssertionError(f"{where}: model in train mode: no error raised, expected EisError")
    finally:
        task.model.eval()


#: (arch, channels, side) settings every repair method is checked on.
REPAIR_SETTINGS: tuple[tuple[str, int, int], ...] = (("cnn", 1, 16), ("resnet", 3, 32))


def check_repair_tool(
    tool_or_name: Any,
    settings: dict[str, Any] | None = None,
    *,
    cases: Sequence[tuple[str, int, int]] = REPAIR_SETTINGS,
    n: int = 12,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ToolReport:
    """Check a repair method against the contract of ``eis.tools.repair.base``; raise AssertionError on a
    violation. Checks: the input model and budget stay unchanged; the result is a ``Repaired`` holding a
    model of the same class, state-dict keys and shapes, finite weights, eval mode, on the input's device;
    two calls give the same weights; an empty or mislabelled budget raises a one-line EisError; a method
    that needs a detection refuses a missing one (EisError) and an unflagged one (NotApplicable)."""
    from eis.tools.detection.base import Detection
    from eis.tools.repair.base import NotApplicable, Repaired, RepairTool

    tool = make_tool(tool_or_name, **(settings or {})) if isinstance(tool_or_name, str) else tool_or_name
    if not isinstance(tool, RepairTool):
        raise EisError(f"check_repair_tool checks repair methods, got {type(tool).__name__}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    report = ToolReport(tool.name or type(tool).__name__)
    gen = torch.Generator().manual_seed(seed)
    needs = tool.detector_tool() is not None
    for arch, c, side in cases:
        where = f"{report.tool} on {arch} {c}x{side}x{side}"
        model = contract_model(arch, c, side, seed).to(dev)
        x = torch.rand((n, c, side, side), generator=gen).to(dev)
        y = (torch.arange(n) % NUM_CLASSES).to(dev)
        det = None
        if needs:
            mask = torch.zeros(side, side)
            mask[-4:, -4:] = 1
            det = Detection(score=10.0, target=0, mask=mask, pattern=torch.ones(c, side, side))
        outs = []
        try:
            for _ in range(2):
                x0, y0 = x.clone(), y.clone()
                with _unchanged(model, where):
                    out = tool.repair(model, x, y, NUM_CLASSES, detection=det)
                _assert(torch.equal(x, x0) and torch.equal(y, y0), f"{where}: the budget was modified")
                outs.append(out)
        except ToolRefusal as e:
            _assert(str(e).strip(), f"{where}: ToolRefusal with an empty message")
            report.refusals[where] = str(e)
            continue
        out = outs[0]
        _assert(isinstance(out, Repaired), f"{where}: returned {type(out).__name__}, not Repaired")
        _assert(type(out.model) is type(model), f"{where}: returned a {type(out.model).__name__}")
        a, b = model.state_dict(), out.model.state_dict()
        _assert(
            a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a),
            f"{where}: the repaired state dict differs in keys or shapes",
        )
        _assert(out.model is not model, f"{where}: returned the input model itself, not a copy")
        _assert(
            all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point()),
            f"{where}: non-finite weights",
        )
        _assert(not any(m.training for m in out.model.modules()), f"{where}: repaired model not in eval mode")
        _assert(all(v.device == dev for v in b.values()), f"{where}: repaired model not on {dev}")
        again = outs[1].model.state_dict()
        _assert(all(torch.equal(b[k], again[k]) for k in b), f"{where}: two calls with the same seed differ")
        report.passed += [f"{where} contract", f"{where} deterministic", f"{where} no side effects"]
        bad = {"empty budget": (x[:0], y[:0]), "labels of the wrong length": (x, y[:-1])}
        bad["label out of range"] = (x, torch.full_like(y, NUM_CLASSES))
        for what, (xb, yb) in bad.items():
            _expect_repair_error(tool, (model, xb, yb, NUM_CLASSES), det, what, where)
        if needs:
            _expect_repair_error(tool, (model, x, y, NUM_CLASSES), None, "missing detection", where)
            quiet = Detection(score=0.0, target=0, mask=det.mask, pattern=det.pattern)  # type: ignore[union-attr]
            try:
                tool.repair(model, x, y, NUM_CLASSES, detection=quiet)
                raise AssertionError(f"{where}: an unflagged detection did not raise NotApplicable")
            except NotApplicable as e:
                _assert(str(e).strip() and "\n" not in str(e), f"{where}: NotApplicable message not one line")
        report.passed.append(f"{where} bad inputs raise EisError")
    return report


def _expect_repair_error(tool: Any, args: tuple, det: Any, what: str, where: str) -> None:
    try:
        tool.repair(*args, detection=det)
    except EisError as e:
        _assert(str(e).strip() and "\n" not in str(e), f"{where}: {what}: EisError message not one line")
        return
    except Exception as e:  # noqa: BLE001 - any other exception is the violation we report
        raise AssertionError(f"{where}: {what}: raised {type(e).__name__} ({e}), expected EisError") from None
    raise AssertionError(f"{where}: {what}: no error raised, expected EisError")
