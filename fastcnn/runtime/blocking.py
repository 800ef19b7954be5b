"""Which tensors of a plan are stored NCHW8c ("blocked", see fastcnn/_kernels/blocked.pyx).

A tensor is blocked when that is worth it and safe: it is a 4-D float32 activation with a
multiple of 8 channels, neither a model input nor a model output, and its producer and every
consumer have a kernel for the layouts they would see. Each kernel module states what it can
do in `LAYOUT_RULES`: op -> rule(node, in_types, out_types, attrs, in_blocked, out_blocked) ->
bool, called with the candidate layouts of the node's runtime inputs and outputs (False for
constants and omitted inputs). Ops without a rule take and give NCHW only.

The assignment starts from every candidate blocked and repairs, until every node accepts its
layouts: a node that refuses them has its outputs made NCHW if that is enough, else its inputs
(keeping its outputs blocked if it then accepts them), else both.
Each repair only unblocks, so this ends; a plan without candidates is the plain NCHW plan.
"""
from __future__ import annotations

BLOCK = 8


def _candidate(v, types, consts, graph_io) -> bool:
    t = types.get(v)
    return (t is not None and v not in consts and v not in graph_io and t.dtype == "float32"
            and len(t.shape) == 4 and t.shape[1] % BLOCK == 0 and t.shape[1] > 0)


def assign_layouts(graph, run_nodes, inferred, attrs_of, rules=None) -> set:
    """The set of tensor names to store blocked. run_nodes: the nodes that run (in order);
    attrs_of: node name -> validated attributes; rules: op -> rule (default LAYOUT_RULES)."""
    if rules is None:
        rules = layout_rules()
    types, consts = inferred.types, inferred.consts
    graph_io = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    blocked = set()
    for node in run_nodes:
        if node.op in rules:
            blocked.update(o for o in node.outputs if o and _candidate(o, types, consts, graph_io))
    if not blocked:
        return blocked

    def accepts(node):
        ins = [bool(x) and x in blocked for x in node.inputs]
        outs = [bool(o) and o in blocked for o in node.outputs]
        rule = rules.get(node.op)
        if rule is None:
            return not any(ins) and not any(outs)
        return rule(node, [types.get(x) if x else None for x in node.inputs],
                    [types.get(o) if o else None for o in node.outputs], attrs_of[node.name],
                    ins, outs)

    changed = True
    while changed:
        changed = False
        for node in run_nodes:
            if accepts(node):
                continue
            changed = True
            outs = [o for o in node.outputs if o in blocked]
            if outs:
                blocked.difference_update(outs)
                if accepts(node):
                    continue
                # blocked outputs that were not the trouble stay (a conv reading a pool's
                # NCHW output may still store blocked for the next pool)
                ins = [x for x in node.inputs if x in blocked]
                blocked.update(outs)
                blocked.difference_update(ins)
                if ins and accepts(node):
                    continue
                blocked.difference_update(outs)
            blocked.difference_update(x for x in node.inputs if x)
    return blocked


def layout_rules() -> dict:
    """op -> rule, gathered from the kernel modules that have blocked kernels."""
    from fastcnn.runtime import k_conv, k_eltwise, k_pool
    return {"Conv": k_conv.conv_layouts, "MaxPool": k_pool.pool_layouts,
            "GlobalAveragePool": k_pool.global_pool_layouts, "Mul": k_eltwise.scale_layouts}
