"""A journey definition as a graph to draw: nodes laid out in columns by their distance from the start
(deterministic, so the same journey always looks the same), edges labelled with what takes them (next,
timeout, a branch's condition, a split arm), and per node what happened there (journey_stats)."""

from __future__ import annotations

from collections import deque
from typing import Any

from careloop.journeys.definition import Journey, Node

#: colour per node type (Okabe-Ito), with the type also written on the node: never colour alone
NODE_COLOURS = {
    "send": "#0072B2",
    "wait": "#E69F00",
    "branch": "#CC79A7",
    "split": "#CC79A7",
    "task": "#009E73",
    "update": "#56B4E9",
    "webhook": "#8C6D00",
    "exit": "#555555",
}


def _edges(node: Node) -> list[tuple[str, str]]:
    """(target, label) of each edge out of a node."""
    out: list[tuple[str, str]] = []
    if node.type == "branch":
        out += [(b["next"], "when") for b in node.spec["branches"] if b.get("next")]
        if node.spec.get("default"):
            out.append((node.spec["default"], "default"))
    elif node.type == "split":
        out += [(a["next"], f"{a['name']} {a['percent']}%") for a in node.spec["arms"] if a.get("next")]
    if node.next:
        out.append((node.next, "event" if node.type == "wait" and node.spec.get("event") else "next"))
    if node.type == "wait" and node.spec.get("timeout_next"):
        out.append((node.spec["timeout_next"], "timeout"))
    return out


def layout(journey: Journey) -> dict[str, tuple[int, int]]:
    """Column (distance from the start) and row of every node."""
    depth: dict[str, int] = {journey.start: 0}
    queue = deque([journey.start])
    while queue:
        nid = queue.popleft()
        for target, _ in _edges(journey.nodes[nid]):
            if target in journey.nodes and target not in depth:
                depth[target] = depth[nid] + 1
                queue.append(target)
    for nid in journey.nodes:  # unreachable nodes cannot be saved, but stay drawable
        depth.setdefault(nid, max(depth.values(), default=0) + 1)
    rows: dict[int, int] = {}
    pos = {}
    for nid in sorted(journey.nodes, key=lambda n: (depth[n], list(journey.nodes).index(n))):
        col = depth[nid]
        pos[nid] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return pos


def node_counts(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per node: entries now there (or finished there) by status, steps taken, sends by status."""
    out: dict[str, dict[str, int]] = {}
    for r in stats["at_node"]:
        d = out.setdefault(r["node"], {})
        d[f"at_{r['status']}"] = d.get(f"at_{r['status']}", 0) + r["entries"]
        d["at"] = d.get("at", 0) + r["entries"]
    for r in stats["steps"]:
        d = out.setdefault(r["node"], {})
        d["steps"] = d.get("steps", 0) + r["count"]
    for r in stats["sends"]:
        d = out.setdefault(r["node"], {})
        d[f"send_{r['status']}"] = d.get(f"send_{r['status']}", 0) + r["count"]
    return out


def graph_option(journey: Journey, stats: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """The ECharts option of a graph series drawing the journey (`labels`: translated words)."""
    pos = layout(journey)
    counts = node_counts(stats)
    nodes = []
    for nid, node in journey.nodes.items():
        col, row = pos[nid]
        c = counts.get(nid, {})
        lines = [nid, f"({labels.get('type.' + node.type, node.type)})"]
        lines.append(f"{labels['steps']} {c.get('steps', 0):,} · {labels['here']} {c.get('at', 0):,}")
        if node.type == "send":
            lines.append(
                f"{labels['sent']} {c.get('send_sent', 0):,} · {labels['blocked']} {c.get('send_blocked', 0):,}"
            )
        nodes.append(
            {
                "id": nid,
                "name": nid,
                "x": col * 260,
                "y": row * 150,
                "value": c.get("steps", 0),
                "symbol": "roundRect",
                "symbolSize": [200, 96 if node.type == "send" else 78],
                "itemStyle": {
                    "color": "#ffffff",
                    "borderColor": NODE_COLOURS.get(node.type, "#555555"),
                    "borderWidth": 3,
                },
                "label": {
                    "show": True,
                    "formatter": "\n".join(lines),
                    "color": "#1a1a1a",
                    "fontSize": 12,
                    "lineHeight": 16,
                },
            }
        )
    links = [
        {
            "source": nid,
            "target": target,
            "label": {
                "show": label != "next",
                "formatter": labels.get("edge." + label, label),
                "fontSize": 11,
                "color": "#333333",
            },
        }
        for nid, node in journey.nodes.items()
        for target, label in _edges(node)
        if target in journey.nodes
    ]
    return {
        "tooltip": {"show": False},
        "series": [
            {
                "type": "graph",
                "layout": "none",
                "left": 110,
                "right": 110,
                "roam": True,
                "edgeSymbol": ["none", "arrow"],
                "edgeSymbolSize": 10,
                "lineStyle": {"color": "#444444", "width": 1.5, "curveness": 0.15},
                "data": nodes,
                "links": links,
            }
        ],
    }
