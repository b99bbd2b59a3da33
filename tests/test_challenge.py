"""The mechanist challenge: rule families, exact grammar search, the challenge track and `eis challenge`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from eis.cli import app
from eis.errors import EisError, ToolRefusal
from eis.tools.base import make_tool
from eis.tools.rule_recovery.base import RuleTask
from eis.tools.rule_recovery.search import bands_rule, best_split, linear_mod_rule, search_token
from eis.tracks.challenge import ChallengeTrack, task_of
from eis.zoo.rules.grammar import centroid_stat, draw, evaluate, region_stat
from eis.zoo.rules.models import all_pairs, encode_pairs
from eis.zoo.rules.spec import RuleSpec, rule_spec
from eis.zoo.suites import load_suite

RULES = ("rule-region-mass", "rule-stripes")


# -- rule families and search, by hand -------------------------------------------------------------------
def test_token_rules_by_hand() -> None:
    pairs = torch.tensor([[1, 2], [3, 4], [6, 0], [2, 5]])
    lin = {"family": "linear_mod", "p": 7, "a": 2, "b": 3, "c": 3}  # 8%7=1, 18%7=4, 12%7=5, 19%7=5
    assert evaluate(lin, pairs).tolist() == [True, False, False, False]
    stripes = {"family": "stripes", "p": 7, "wx": 2, "wy": 3}  # 0+0, 1+1, 3+0, 1+1
    assert evaluate(stripes, pairs).tolist() == [False, False, True, False]
    bands = {"family": "bands", "p": 7, "x": [2, 4], "y": [4, 5]}  # no-no, yes-yes, no-no, yes-no
    assert evaluate(bands, pairs).tolist() == [False, False, False, True]
    assert encode_pairs(pairs[:1], 7).tolist() == [[1, 9, 14]]


def test_image_statistics_by_hand() -> None:
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 3] = 1.0  # one pixel top right
    x[1, 0, 2:, :2] = 0.5  # bottom-left quarter at 0.5
    assert region_stat(x, (2, 4), (0, 2)).tolist() == [0.0, 0.5]
    assert centroid_stat(x, "col").tolist() == [3.0, 0.5]
    assert centroid_stat(x, "row").tolist() == [0.0, 2.5]
    assert centroid_stat(torch.zeros(1, 1, 4, 4), "row").tolist() == [1.5]  # blank: the middle


def test_best_split_by_hand() -> None:
    stats = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    labels = torch.tensor([False, True, True, False, False])
    agree, lo, hi = best_split(stats, labels, band=True)
    assert (float(agree[0]), float(lo[0]), float(hi[0])) == (1.0, 1.5, 3.5)
    agree, t, _ = best_split(stats, torch.tensor([False, False, True, True, False]), band=False)
    assert (float(agree[0]), float(t[0])) == (0.8, 2.5)  # "stat > 2.5" misses only the last


@pytest.mark.parametrize("family", ["linear_mod", "stripes", "bands"])
def test_token_search_recovers_drawn_rules_exactly(family: str) -> None:
    p = 17
    pairs = all_pairs(p)
    for seed in range(3):
        rule = draw(family, seed, p=p)
        found, agree = search_token(family, pairs, evaluate(rule, pairs), p)
        assert agree == 1.0 and torch.equal(evaluate(found, pairs), evaluate(rule, pairs)), (rule, found)


def test_bands_and_linear_search_from_half_the_grid() -> None:
    """Unqueried cells count for nothing: half the grid still pins the rule down."""
    p = 13
    pairs = all_pairs(p)[torch.randperm(p * p, generator=torch.Generator().manual_seed(0))[: p * p // 2]]
    for rule in ({"family": "bands", "p": p, "x": [2, 7], "y": [5, 11]},
                 {"family": "linear_mod", "p": p, "a": 3, "b": 5, "c": 6}):  # fmt: skip
        search = bands_rule if rule["family"] == "bands" else linear_mod_rule
        found, agree = search(pairs, evaluate(rule, pairs), p)
        assert agree == 1.0 and torch.equal(evaluate(found, all_pairs(p)), evaluate(rule, all_pairs(p)))


def test_rule_specs_and_bad_input() -> None:
    specs = load_suite("challenge")
    kinds = [s.kind for s in specs]
    assert kinds.count("image") >= 10 and kinds.count("token") >= 10
    with pytest.raises(EisError, match="unknown family 'xor'; valid: template_band"):
        rule_spec({"name": "r", "family": "xor"}, "here")
    with pytest.raises(EisError, match="unknown field 'colour'"):
        rule_spec({"name": "r", "family": "bands", "colour": 1}, "here")
    with pytest.raises(EisError, match=r"p must be an integer in \[11, 127\]"):
        RuleSpec("r", "bands", p=5).validated()
    with pytest.raises(EisError, match="malformed linear_mod rule"):
        evaluate({"family": "linear_mod", "p": 7}, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(EisError, match=r"a token rule labels \(N, 2\) pairs"):
        evaluate({"family": "bands", "p": 7, "x": [0, 1], "y": [0, 1]}, torch.zeros(2, 3))


# -- the track on the smoke zoo's rule cases -------------------------------------------------------------
@pytest.fixture(scope="module")
def track_results(smoke):
    track = ChallengeTrack()
    tools = ("grammar_search", "distill_knn", "distill_tree", "gradient_feature")
    out = {}
    for name in RULES:
        for tool in tools:
            try:
                out[name, tool] = track.run(smoke[name], make_tool(tool))
            except ToolRefusal as exc:
                out[name, tool] = exc
    return out


def test_smoke_rule_cases_meet_their_bars(smoke) -> None:
    for name in RULES:
        case = smoke[name]
        assert case.meta["kind"] == "rule" and case.meta["clean_accuracy"] >= 0.93
        assert not {"rule", "rows", "cols", "threshold", "wx", "wy"} & set(case.meta)  # the rule is sealed


def test_grammar_search_recovers_every_smoke_rule(track_results) -> None:
    for name in RULES:
        assert track_results[name, "grammar_search"].scores["agree_rule"] >= 0.95, name


def test_distillation_copies_the_network_where_it_is_wrong(track_results) -> None:
    """A copy of the network scores clearly lower where the network is wrong than in distribution; the
    grammar rule, which recovered the rule, does not."""
    res = track_results["rule-region-mass", "distill_knn"]
    assert res.extras["n_net_wrong"] >= 10
    assert res.scores["agree_rule_net_wrong"] < res.scores["agree_rule"] - 0.3
    assert res.scores["agree_net"] > 0.85
    rule = track_results["rule-region-mass", "grammar_search"]
    assert rule.scores["agree_rule_net_wrong"] > res.scores["agree_rule_net_wrong"] + 0.3
    assert rule.scores["description_bytes"] < res.scores["description_bytes"] / 1000


def test_token_only_and_image_only_solvers_refuse(track_results, smoke) -> None:
    assert isinstance(track_results["rule-stripes", "gradient_feature"], ToolRefusal)
    with pytest.raises(ToolRefusal, match="linear_mod rules only"):
        make_tool("fourier_embedding").recover(task_of(smoke["rule-stripes"]))
    assert track_results["rule-region-mass", "gradient_feature"].scores["agree_rule"] >= 0.95


def test_dominant_frequency_finds_a_planted_frequency() -> None:
    """Embeddings carrying frequency 3 over Z_11, in any phase: the frequency is 3."""
    from eis.tools.rule_recovery.whitebox import dominant_frequency

    p = 11
    k = torch.arange(p, dtype=torch.float64)
    w = torch.stack([torch.cos(2 * torch.pi * 3 * k / p), torch.sin(2 * torch.pi * 3 * k / p)], 1)
    assert dominant_frequency(w) == 3
    assert dominant_frequency(torch.roll(w, 4, 0)) == 3


def test_task_bad_input(smoke) -> None:
    task = task_of(smoke["rule-stripes"])
    bad = RuleTask(task.model, "token", "stripes", task.inputs + 100, task.meta)
    with pytest.raises(EisError, match=r"token pairs must be a non-empty set of values in \[0, 23\)"):
        bad.check()
    with pytest.raises(EisError, match="is a token family, not 'image'"):
        RuleTask(task.model, "image", "stripes", task.inputs, task.meta).check()


def test_solvers_are_deterministic(smoke) -> None:
    task = task_of(smoke["rule-stripes"])
    for name in ("grammar_search", "distill_tree"):
        a, b = make_tool(name).recover(task), make_tool(name).recover(task)
        assert a.description == b.description


# -- eis challenge new / score ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def challenge_dir(tmp_path_factory):
    import eis.challenge

    out = tmp_path_factory.mktemp("ch") / "c"
    return eis.challenge.new_challenge(5, out, family="stripes", p=23)


def test_challenge_folder_holds_no_truth(challenge_dir) -> None:
    import eis.challenge
    from eis.zoo.rules.case import RuleCase

    assert sorted(p.name for p in challenge_dir.iterdir()) == sorted(eis.challenge.FILES)
    hints = json.loads((challenge_dir / "challenge.json").read_text())
    case = RuleCase(eis.zoo.artifact.zoo_dir() / hints["case_id"])
    rule = case.truth().rule
    text = (challenge_dir / "challenge.json").read_text()
    assert not {"rule", "wx", "wy", "truth"} & set(hints) and '"wx"' not in text and '"wy"' not in text
    assert hints["family"] == "stripes" and hints["network_accuracy"] >= 0.85
    assert set(load_file(str(challenge_dir / "inputs.safetensors"))) == {"train"}
    model = eis.challenge.load_model(challenge_dir)
    pairs = all_pairs(23)
    agree = (model(encode_pairs(pairs, 23))[:, -1].argmax(1).bool() == evaluate(rule, pairs)).float().mean()
    assert agree >= 0.85


def test_challenge_score_of_the_true_rule_and_of_bad_files(challenge_dir, tmp_path) -> None:
    import eis.challenge
    from eis.zoo.rules.case import RuleCase

    hints = json.loads((challenge_dir / "challenge.json").read_text())
    rule = RuleCase(eis.zoo.artifact.zoo_dir() / hints["case_id"]).truth().rule
    good = tmp_path / "rule.py"
    good.write_text(
        f"def label(x):\n    return (x[:, 0] // {rule['wx']} + x[:, 1] // {rule['wy']}) % 2 == 1\n"
    )
    scores = eis.challenge.score_submission(challenge_dir, good)
    assert scores["agree_rule"] == 1.0 and scores["description_bytes"] == good.stat().st_size
    wrong = tmp_path / "zero.py"
    wrong.write_text("import numpy as np\ndef label(x):\n    return np.zeros(len(x))\n")
    assert eis.challenge.score_submission(challenge_dir, wrong)["agree_rule"] < 0.7
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(EisError, match="defines no function label"):
        eis.challenge.score_submission(challenge_dir, empty)
    slow = tmp_path / "slow.py"
    slow.write_text("def label(x):\n    while True:\n        pass\n")
    with pytest.raises(EisError, match="ran past the 2 s time limit"):
        eis.challenge.score_submission(challenge_dir, slow, timeout=2)


def test_challenge_cli(challenge_dir, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["challenge", "new", "--seed", "5", "--out", str(challenge_dir)])
    assert res.exit_code == 2 and "is not empty" in res.output
    res = runner.invoke(app, ["challenge", "score", str(tmp_path), str(tmp_path / "rule.py")])
    assert res.exit_code == 2 and "is not a challenge folder" in res.output
    res = runner.invoke(
        app, ["challenge", "new", "--seed", "5", "--family", "nope", "--out", str(tmp_path / "n")]
    )
    assert res.exit_code == 2 and "unknown rule family 'nope'" in res.output


def test_rule_build_is_deterministic(fresh_home) -> None:
    from eis.zoo.build import build_case

    spec = RuleSpec("det", "stripes", seed=2, p=17, steps=60, bar=0.0)
    a, _ = build_case(spec)
    wa = load_file(str(a.root / "model.safetensors"))
    b, built = build_case(spec, force=True)
    assert built
    wb = load_file(str(b.root / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("name", ["grammar_search", "distill_tree", "distill_knn", "distill_logistic",
                                  "gradient_feature", "fourier_embedding"])  # fmt: skip
def test_contract(name: str) -> None:
    from eis.testing import check_tool
    from eis.tools.base import list_tools

    assert name in list_tools("rule_recovery")
    report = check_tool(name)
    assert "bad inputs raise EisError" in report.passed
    refused = {k.strip() for k in report.refusals}
    tokens, images = {"linear_mod", "stripes", "bands"}, {"template_band", "region_mass", "centroid"}
    expected = {"gradient_feature": tokens, "fourier_embedding": (tokens | images) - {"linear_mod"}}
    assert refused == expected.get(name, set()), str(report)


def test_runner_and_leaderboard(smoke, tmp_path) -> None:
    """Through the runner: refusals are cells not applicable (counted apart from failures, the run goes on),
    rows per family, and the white-box solver's verdict against the best control."""
    from eis.results import load
    from eis.runner import run_benchmark

    cases = [smoke[n] for n in RULES]
    tools = ["grammar_search", "gradient_feature"]
    summary = run_benchmark(cases, tools=tools, tracks=["challenge"], workers=0, store=tmp_path / "c.db")
    assert (summary.failed, summary.not_applicable) == (0, 1)  # gradient_feature refuses the token rule
    table = ChallengeTrack().summarize(load(tmp_path / "c.db"))
    row = table[(table.tool == "gradient_feature") & (table.flaw == "all") & (table.metric == "agree_rule")]
    assert int(row.n.iloc[0]) == 1 and int(row.n_failed.iloc[0]) == 0  # the refusal is no failure
    assert row.verdict.iloc[0].startswith("beats ")
    assert {"image/region_mass", "token/stripes", "all"} <= set(table.flaw)
    ctrl = table[(table.tool == "grammar_search") & (table.flaw == "all") & (table.metric == "agree_rule")]
    assert ctrl.verdict.iloc[0] == "control" and float(ctrl["mean"].iloc[0]) >= 0.95
