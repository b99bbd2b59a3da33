"""Correctness of the attribution tools and controls on hand-checkable cases and on the zoo's archs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eis.errors import EisError, ToolRefusal
from eis.fused import COMPILE_ENV
from eis.testing import contract_model
from eis.tools.attribution.cam import cam_layer
from eis.tools.attribution.common import grid_mask, noisy_baselines
from eis.tools.base import make_tool
from eis.zoo.archs import build_arch

ARCHS = [("cnn", 1, 16), ("resnet", 3, 32)]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def scaled_model(arch: str, c: int, side: int) -> nn.Module:
    """A contract model whose head is scaled so that |f(x) - f(0)| is about 1 on uniform images.

    Random-weight nets barely move their scores; scaling the last linear layer scales f(x) - f(0) and
    every attribution by the same factor, so tolerances then mean something.
    """
    model = contract_model(arch, c, side)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    x = torch.rand((8, c, side, side), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spread = (model(x) - model(torch.zeros_like(x))).abs().mean()
        head.weight.div_(spread)
    return model


def score(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, t[:, None])[:, 0]


@pytest.mark.parametrize(("arch", "c", "side"), ARCHS)
@pytest.mark.parametrize(("name", "rtol"), [("integrated_gradients", 2e-2), ("deeplift", 1e-4)])
def test_completeness(arch: str, c: int, side: int, name: str, rtol: float) -> None:
    """IG and DeepLift maps sum to f(x) - f(black) (IG up to its quadrature error)."""
    model = scaled_model(arch, c, side)
    x = torch.rand((4, c, side, side), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 3, 5, 9])
    settings = {"n_steps": 128} if name == "integrated_gradients" else {}
    attr = make_tool(name, **settings).attribute(model, x, t)
    delta = score(model, x, t) - score(model, torch.zeros_like(x), t)
    torch.testing.assert_close(attr.sum((1, 2, 3)), delta, rtol=rtol, atol=rtol * delta.abs().mean().item())


@pytest.mark.parametrize(("arch", "c", "side"), ARCHS)
def test_deeplift_shap_completeness(arch: str, c: int, side: int) -> None:
    """DeepLiftShap maps sum to f(x) - mean over the baselines of f(baseline)."""
    model = scaled_model(arch, c, side)
    x = torch.rand((3, c, side, side), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([1, 2, 4])
    tool = make_tool("deeplift_shap", n_baselines=4, baseline_noise=0.2, seed=7)
    attr = tool.attribute(model, x, t)
    base = noisy_baselines(x, 4, 0.2, 7)
    with torch.no_grad():
        expected = score(model, x, t) - model(base)[:, t].mean(0)
    torch.testing.assert_close(attr.sum((1, 2, 3)), expected, rtol=1e-4, atol=1e-4)


def test_padded_max_pool_tree_and_deeplift_on_resnet18() -> None:
    """ResNet-18's 3x3 / stride-2 / padding-1 max-pool as a ReLU tree: the values and gradients of
    ``nn.MaxPool2d`` on inputs of any sign, and DeepLift on a ResNet-18 (which holds that pool) sums to
    f(x) - f(black)."""
    from eis.tools.attribution.rewrite import MaxPoolAsReLU

    pool, tree = nn.MaxPool2d(3, 2, 1), MaxPoolAsReLU(3, 2, 1)
    x = torch.randn(2, 3, 9, 10, generator=torch.Generator().manual_seed(4), requires_grad=True)
    torch.testing.assert_close(tree(x), pool(x))
    g_tree, g_pool = (torch.autograd.grad(f(x).pow(2).sum(), x)[0] for f in (tree, pool))
    torch.testing.assert_close(g_tree, g_pool)
    torch.manual_seed(8)
    model = build_arch("resnet18-w16", 3, 10, 32).eval()
    xs = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(9))
    t = torch.tensor([1, 7])
    attr = make_tool("deeplift").attribute(model, xs, t)
    delta = score(model, xs, t) - score(model, torch.zeros_like(xs), t)
    torch.testing.assert_close(attr.sum((1, 2, 3)), delta, rtol=1e-4, atol=1e-4 * delta.abs().mean().item())


def test_raw_captum_deeplift_is_wrong_on_resnet() -> None:
    """The pitfall the call-site rewrite fixes: plain Captum DeepLift on the zoo resnet is not complete."""
    from captum.attr import DeepLift

    model = scaled_model("resnet", 3, 32)
    x = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0, 1])
    delta = score(model, x, t) - score(model, torch.zeros_like(x), t)
    try:
        raw = DeepLift(copy.deepcopy(model)).attribute(x.clone(), baselines=0.0, target=t)
    except Exception:  # noqa: BLE001 - raising is also a failure of the raw method
        return
    assert not torch.allclose(raw.sum((1, 2, 3)), delta, rtol=1e-3, atol=1e-3)


def _captum_net(model: nn.Module, name: str) -> nn.Module:
    from eis.tools.attribution.rewrite import drop_reshape_modules, maxpools_as_relus, split_activations

    net = split_activations(model, name)
    return drop_reshape_modules(net) if name == "lrp" else maxpools_as_relus(net)


def _small_net(kind: str) -> nn.Module:
    """8x8 inputs. Sigmoid: the rescale rule's general (non-ReLU) path; Tanh: LRP's pass-through rule;
    pool2_odd: a 2x2 pool over an odd 7x7 map (DeepLift's one-node pool, edge row/column unused);
    pool3: an overlapping 3x3 / stride-2 pool (DeepLift's general ReLU tree); pool3_pad: ResNet's 3x3 /
    stride-2 pool with padding 1."""
    torch.manual_seed(5)
    if kind.startswith("pool"):
        pools = {"pool2_odd": nn.MaxPool2d(2), "pool3": nn.MaxPool2d(3, 2)}
        pools["pool3_pad"] = nn.MaxPool2d(3, 2, 1)
        pool, side = pools[kind], 4 if kind == "pool3_pad" else 3
        layers = [nn.Conv2d(1, 4, 2), nn.ReLU(), pool, nn.Flatten(), nn.Linear(4 * side * side, 5)]
        return nn.Sequential(*layers).eval()
    act = nn.Sigmoid() if kind == "sigmoid" else nn.Tanh()
    return nn.Sequential(nn.Conv2d(1, 4, 3), act, nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's notes about its own hooks
@pytest.mark.parametrize(
    ("name", "arch", "compiled"),
    [("deeplift", "cnn", "1"), ("deeplift", "resnet", "1"), ("deeplift", "sigmoid", "1"),
     ("deeplift", "pool2_odd", "1"), ("deeplift", "pool3", "1"), ("deeplift", "pool3_pad", "1"),
     ("deeplift_shap", "cnn", "1"), ("deeplift_shap", "resnet", "1"),
     ("lrp", "cnn", "1"), ("lrp", "tanh", "1"),
     ("deeplift", "cnn", "0"), ("deeplift", "resnet", "0"), ("deeplift", "pool2_odd", "0"),
     ("deeplift_shap", "resnet", "0")]
)  # fmt: skip
def test_rule_tools_equal_captum(
    name: str, arch: str, compiled: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our rule implementations give Captum's maps on the same call-site-split model copy, with the
    rescale rule's kernels compiled (where this machine can) and run eagerly (``EIS_COMPILE=0``)."""
    from captum.attr import LRP, DeepLift, DeepLiftShap

    monkeypatch.setenv(COMPILE_ENV, compiled)

    if arch in ("sigmoid", "tanh", "pool2_odd", "pool3", "pool3_pad"):
        model, c, side = _small_net(arch), 1, 8
    else:
        c, side = (1, 16) if arch == "cnn" else (3, 32)
        model = scaled_model(arch, c, side)
    x = torch.rand((4, c, side, side), generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0, 1, 2, 3])
    tool = make_tool(name, **({"n_baselines": 4, "seed": 3} if name == "deeplift_shap" else {}))
    ours = tool.attribute(model, x, t)
    net = _captum_net(model, name)
    if name == "deeplift":
        ref = DeepLift(net).attribute(x.clone(), baselines=0.0, target=t)
    elif name == "deeplift_shap":
        ref = DeepLiftShap(net).attribute(x.clone(), baselines=noisy_baselines(x, 4, 0.1, 3), target=t)
    else:
        ref = LRP(net).attribute(x.clone(), target=t)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


class GuidedReLU(torch.autograd.Function):
    """Hand-written Guided Backprop ReLU: pass gradient where both input and gradient are positive."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0)


class DeconvReLU(torch.autograd.Function):
    """Hand-written Deconvolution ReLU: rectify the gradient, ignore the forward input."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g.clamp(min=0)


class Tricky(nn.Module):
    """Every pitfall at once: an in-place ReLU module used twice, a functional ReLU, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 6 * 6, 3)
        self.reference: type[torch.autograd.Function] | None = None

    def act(self, x: torch.Tensor, site: str) -> torch.Tensor:
        if self.reference is not None:
            return self.reference.apply(x)
        return F.relu(x) if site == "functional" else self.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x), "module")
        h = self.act(self.conv2(h), "functional") + h
        return self.fc(self.act(h, "module").flatten(1))


@pytest.mark.parametrize(("name", "rule"), [("guided_backprop", GuidedReLU), ("deconvolution", DeconvReLU)])
def test_guided_rules_match_reference(name: str, rule: type[torch.autograd.Function]) -> None:
    torch.manual_seed(0)
    model = Tricky().eval()
    x = torch.randn(5, 1, 6, 6)
    t = torch.tensor([0, 1, 2, 0, 1])
    got = make_tool(name).attribute(model, x, t)
    ref_model = copy.deepcopy(model)
    ref_model.reference = rule
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ref_model(xr).gather(1, t[:, None]).sum(), xr)
    plain = make_tool("saliency", abs=False).attribute(model, x, t)
    assert not torch.allclose(plain, grad, atol=1e-4)  # the rule changes the map, so the check bites
    torch.testing.assert_close(got, grad, rtol=1e-5, atol=1e-6)


def test_lrp_equals_input_x_gradient_without_biases() -> None:
    """LRP-epsilon (tiny epsilon) on a bias-free ReLU net is input x gradient (Ancona et al. 2018)."""
    model = contract_model("cnn", 1, 16)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    x = torch.rand((3, 1, 16, 16), generator=torch.Generator().manual_seed(4))
    t = torch.tensor([2, 5, 7])
    lrp = make_tool("lrp").attribute(model, x, t)
    ixg = make_tool("input_x_gradient").attribute(model, x, t)
    torch.testing.assert_close(lrp, ixg, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["lrp"])
def test_refuses_resnet(name: str) -> None:
    model = contract_model("resnet", 3, 32)
    with pytest.raises(ToolRefusal, match="BatchNorm|residual"):
        make_tool(name).attribute(model, torch.rand(2, 3, 32, 32), 0)


def test_hook_tools_refuse_untraceable_models() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.conv(x).mean((2, 3))
            return self.fc(h.relu() if h.sum() > 0 else h)  # data-dependent control flow

    with pytest.raises(ToolRefusal, match="torch.fx cannot trace"):
        make_tool("deeplift").attribute(Branchy().eval(), torch.rand(2, 1, 5, 5), 0)


def test_deeplift_refuses_unsupported_nonlinearity() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    with pytest.raises(ToolRefusal, match="GELU"):
        make_tool("deeplift").attribute(model, torch.rand(2, 1, 6, 6), 0)


def test_gradcam_layer_choice_and_value() -> None:
    cnn, resnet = contract_model("cnn", 1, 16), contract_model("resnet", 3, 32)
    assert cam_layer(cnn, torch.rand(1, 1, 16, 16)) == "features"
    assert cam_layer(resnet, torch.rand(1, 3, 32, 32)) == "layer3"
    with pytest.raises(ToolRefusal, match="runs 2 times"):
        make_tool("gradcam", layer="layer3.relu").attribute(resnet, torch.rand(1, 3, 32, 32), 0)
    # Hand computation on the cnn: relu(sum_k mean(dy/dA_k) * A_k), bilinearly upsampled.
    x = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(5))
    t = torch.tensor([1, 6])
    acts = cnn.features(x).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(cnn.classifier(acts).gather(1, t[:, None]).sum(), acts)
    cam = F.relu((g.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)  # (N, 1, H, W): C = 1
    torch.testing.assert_close(make_tool("gradcam").attribute(cnn, x, t), expected.detach())


class Linear2D(nn.Module):
    """f_k(x) = sum(w_k * x): perturbation attributions are exact and computable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4) / 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, None] * self.w[None]).sum((2, 3, 4))


def test_grid_mask_by_hand() -> None:
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    assert torch.equal(grid_mask(4, 4, 2, torch.device("cpu"))[0, 0], expected)
    assert grid_mask(5, 5, 2, torch.device("cpu"))[0, 0, 4].tolist() == [6, 6, 7, 7, 8]


@pytest.mark.parametrize("name", ["feature_ablation", "shapley_value_sampling"])
def test_superpixel_methods_on_linear_model(name: str) -> None:
    """On a linear model each 2x2 cell's value is the sum of w*x over the cell, spread over its pixels."""
    model = Linear2D().eval()
    x = torch.rand((2, 1, 4, 4), generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0, 1])
    got = make_tool(name, cell=2).attribute(model, x, t)
    contrib = x * model.w[t].detach()
    cell_sum = F.avg_pool2d(contrib, 2) * 4
    torch.testing.assert_close(got, F.interpolate(cell_sum, scale_factor=2, mode="nearest"))


def test_occlusion_on_linear_model() -> None:
    """Window 2, stride 2 on a linear model: each pixel gets the score drop of its one window."""
    model = Linear2D().eval()
    x = torch.rand((1, 1, 4, 4), generator=torch.Generator().manual_seed(7))
    got = make_tool("occlusion", window=2, stride=2).attribute(model, x, 1)
    drop = F.avg_pool2d(x * model.w[1].detach(), 2) * 4
    torch.testing.assert_close(got, F.interpolate(drop, scale_factor=2, mode="nearest"))


def test_edge_detector_by_hand() -> None:
    """A vertical step 0 -> 1: Sobel |gx| = 1 + 2 + 1 = 4 on both columns beside the step, 0 elsewhere."""
    x = torch.zeros(1, 2, 5, 6)
    x[..., 3:] = 1.0
    model = nn.Sequential(nn.Conv2d(2, 1, 1), nn.Flatten(), nn.Linear(30, 2)).eval()
    edges = make_tool("edge_detector").attribute(model, x, 0)
    expected = torch.zeros(1, 2, 5, 6)
    expected[..., 2:4] = 4.0  # per channel
    torch.testing.assert_close(edges, expected)


def test_random_and_blank_controls() -> None:
    model = contract_model("cnn", 1, 16)
    x = torch.rand(3, 1, 16, 16)
    a = make_tool("random_map", seed=1).attribute(model, x, 0)
    assert torch.equal(a, make_tool("random_map", seed=1).attribute(model, x, 0))
    assert not torch.equal(a, make_tool("random_map", seed=2).attribute(model, x, 0))
    assert a.shape == (3, 1, 16, 16) and a.min() >= 0 and a.max() < 1
    blank = make_tool("blank_map", value=0.5).attribute(model, x, 0)
    assert torch.equal(blank, torch.full((3, 1, 16, 16), 0.5))
    rgb = make_tool("blank_map", value=0.6).attribute(contract_model("cnn", 3, 16), x.repeat(1, 3, 1, 1), 0)
    assert rgb.shape == (3, 3, 16, 16) and torch.allclose(rgb.sum(1), torch.full((3, 16, 16), 0.6))


@pytest.mark.parametrize("name", ["smoothgrad", "gradient_shap", "lime"])
def test_seed_matters(name: str) -> None:
    model = scaled_model("cnn", 1, 16)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(8))
    small = {"n_samples": 16} if name == "lime" else {"n_samples": 4}
    a = make_tool(name, seed=0, **small).attribute(model, x, 1)
    b = make_tool(name, seed=1, **small).attribute(model, x, 1)
    state = torch.random.get_rng_state()
    assert torch.equal(a, make_tool(name, seed=0, **small).attribute(model, x, 1))
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    assert not torch.equal(a, b) and a.abs().sum() > 0


def test_bad_input_messages() -> None:
    model = contract_model("cnn", 1, 16)
    x = torch.rand(2, 1, 16, 16)
    tool = make_tool("saliency")
    with pytest.raises(EisError, match=r"target 10 out of range; valid classes are 0\.\.9"):
        tool.attribute(model, x, 10)
    with pytest.raises(EisError, match=r"inputs must be shaped \(N, C, H, W\)"):
        tool.attribute(model, x[0], 0)
    with pytest.raises(EisError, match="inputs have 3 channels but the model expects 1"):
        tool.attribute(model, x.expand(2, 3, 16, 16), 0)
    with pytest.raises(EisError, match="train mode"):
        tool.attribute(model.train(), x, 0)
    assert model.training  # refusing did not flip the caller's mode


def test_feature_permutation_refuses_single_image() -> None:
    with pytest.raises(ToolRefusal, match="batch of >= 2"):
        make_tool("feature_permutation").attribute(contract_model("cnn", 1, 16), torch.rand(1, 1, 16, 16), 0)


def _digits_cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A zoo cnn trained for one short epoch on sklearn's digits, upsampled to 16x16 (~85% test accuracy)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, size=16, mode="bilinear")
    y = torch.tensor(d.target)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        from eis.zoo.archs import build_arch

        model = build_arch("cnn", 1, 10, 16)
        opt = torch.optim.Adam(model.parameters(), 5e-3)
        for i in range(0, 1500, 64):
            loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), x[1500:1564], y[1500:1564]


def _rank_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the Spearman correlation between two maps' absolute values."""
    ra = a.abs().flatten(1).argsort(1).argsort(1).float()
    rb = b.abs().flatten(1).argsort(1).argsort(1).float()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).mean().item()


def test_guided_backprop_ignores_top_layers_saliency_does_not() -> None:
    """Adebayo et al. 2018, small: randomising the top layers barely changes Guided Backprop's map."""
    model, x, y = _digits_cnn()
    assert (model(x).argmax(1) == y).float().mean() > 0.6
    rand = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for layer in (rand.classifier[4], rand.classifier[2], rand.features[6]):
            layer.reset_parameters()
    corr = {n: _rank_corr(make_tool(n).attribute(model, x, y), make_tool(n).attribute(rand, x, y))
            for n in ("guided_backprop", "saliency")}  # fmt: skip
    assert corr["guided_backprop"] > 0.6, corr
    assert corr["saliency"] < corr["guided_backprop"] - 0.25, corr


@pytest.mark.parametrize("name", ["deeplift", "guided_backprop", "gradcam", "lrp"])
def test_private_copies_follow_the_models_weights(name: str) -> None:
    """Rule-based tools run on a private copy sharing the model's tensors: weight edits are seen at once."""
    model = contract_model("cnn", 1, 16)
    x = torch.rand((3, 1, 16, 16), generator=torch.Generator().manual_seed(8))
    tool = make_tool(name)
    tool.attribute(model, x, 1)  # builds and caches the copy
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(-0.5)  # in place: the same tensor objects
    fresh = copy.deepcopy(model)  # a model the tool has never seen
    torch.testing.assert_close(tool.attribute(model, x, 1), tool.attribute(fresh, x, 1))
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    head.weight = nn.Parameter(torch.randn_like(head.weight))  # a swapped-in parameter: copy rebuilt
    fresh = copy.deepcopy(model)
    torch.testing.assert_close(tool.attribute(model, x, 1), tool.attribute(fresh, x, 1))
