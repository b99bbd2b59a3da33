"""Circuit-discovery tools: the shared contract, and the methods checked against their definitions."""

from __future__ import annotations

import pytest
import torch

from eis.testing import check_tool, contract_circuit_task
from eis.tools import list_tools, make_tool
from eis.tools.circuits.base import answer_metric, edges_from_nodes, nodes_from_edges
from eis.tools.circuits.gradients import mask_gradient
from eis.zoo.circuits.graph import Graph

FAST = {"eap_ig": {"steps": 4}}


@pytest.mark.parametrize("name", list_tools("circuits"))
def test_contract(name):
    report = check_tool(name, FAST.get(name))
    assert report.passed and not report.refusals, str(report)


def test_family_has_methods_and_the_three_controls():
    assert set(list_tools("circuits", controls=True)) == {"random_circuit", "weight_norm", "everything"}
    assert {"activation_patching", "attribution_patching", "eap", "eap_ig", "edge_patching", "acdc"} <= set(
        list_tools("circuits", controls=False)
    )


def test_metric_by_hand():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 1.0, 0.0], [0.0, 2.0, 4.0]]])
    labels = torch.tensor([[-1, 0, 2]])
    # position 1: 3 - (1 + 0) / 2 = 2.5; position 2: 4 - (0 + 2) / 2 = 3; mean 2.75
    assert answer_metric(logits, labels).tolist() == [2.75]


def test_graph_of_reverse_has_conmy_et_al_edge_count():
    graph = Graph(4, 1)
    assert len(graph.edges) == 77 and len(graph.components) == 8
    assert ("a0.h0", "a0.h0.q") not in graph.edges and ("a0.h0", "m0") in graph.edges


def test_gradient_methods_are_exact_where_the_model_is_linear():
    """Into the logits the model is linear in every source's output, so EAP equals exact edge patching
    there; and the last head feeds only the (linear) unembedding, so AtP equals exact node patching."""
    task = contract_circuit_task("reverse", False, "zero", n=24)
    graph = task.graph
    exact = make_tool("edge_patching").discover(task).edges
    eap = make_tool("eap").discover(task).edges
    into_logits = torch.tensor([d == "logits" for _, d in graph.edges])
    assert torch.allclose(eap[into_logits], exact[into_logits], atol=1e-5)
    nodes_exact = make_tool("activation_patching").discover(task).nodes
    nodes_atp = make_tool("attribution_patching").discover(task).nodes
    last = graph.components.index("a3.h0")
    assert nodes_exact[last] > 0.1 and abs(nodes_exact[last] - nodes_atp[last]) < 1e-5


def test_eap_ig_scores_add_up_to_the_total_effect():
    """Integrated gradients' completeness: signed edge scores sum to metric(full) - metric(all ablated).

    Needs many steps on tracr models: the metric along the path is flat, then jumps near the clean end
    (saturated softmax), which few steps miss; the track's default (8 steps) ranks edges, not sums them.
    """
    task = contract_circuit_task("reverse", False, "zero", n=16)
    steps = 256
    signed = mask_gradient(task, "edge", tuple((i + 0.5) / steps for i in range(steps))).mean(0)
    n = len(task.graph.edges)
    with torch.no_grad():
        total = float(task.run() - task.run(edge_mask=torch.zeros(n)))
    assert abs(total) > 0.5 and abs(float(signed.sum()) - total) < 0.02 * abs(total)


def test_acdc_recovers_the_reverse_circuit_and_keeps_everything_at_zero_threshold():
    task = contract_circuit_task("reverse", False, "zero", n=32)
    found = make_tool("acdc").discover(task)
    from eis.zoo.circuits.truth import ablation_circuit

    _, truth, _ = ablation_circuit(task.model, task.clean, task.corrupted, "zero", task.labels >= 0)
    assert found.circuit == truth
    loose = make_tool("acdc", threshold=-1.0).discover(task)  # nothing is ever cheap enough to remove
    assert loose.circuit == frozenset(task.graph.edges)


def test_node_and_edge_score_conversions_by_hand():
    graph = Graph(1, 1)  # embed, a0.h0, m0; edges: embed->{q,k,v,m0,logits}, a0.h0->{m0,logits}, m0->logits
    edges = edges_from_nodes(graph, torch.tensor([0.3, 0.7], dtype=torch.float64))
    by_name = dict(zip(graph.edges, edges.tolist(), strict=True))
    assert by_name[("a0.h0", "m0")] == 0.3 and by_name[("embed", "a0.h0.q")] == 0.3
    assert by_name[("m0", "logits")] == 0.7 and by_name[("embed", "logits")] == 1.7
    nodes = nodes_from_edges(graph, torch.arange(len(graph.edges), dtype=torch.float64))
    # edges in order: embed->q, k, v, embed->m0, a0.h0->m0, embed->logits, a0.h0->logits, m0->logits
    assert nodes.tolist() == [6.0, 7.0]
