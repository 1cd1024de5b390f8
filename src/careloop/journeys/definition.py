"""Journeys as data: a typed node graph in YAML / JSON, checked before it can be published.

    name: refill_reminder
    trigger: {type: relative_date, trait: pdc_run_out, key: "*", offset: -3d, segment: 慢病管理}
    re_entry: {policy: after, after: 30d}       # once | after | always (default once)
    goal: {event: refill_dispensed, within: 14d}  # the conversion that ends the journey
    holdout: {percent: 10}                       # default on: 10% kept out, for uplift
    start: remind
    nodes:
      remind: {type: send, channel: sms, content: refill_sms, purpose: care_follow_up, next: wait}
      wait:   {type: wait, event: refill_dispensed, timeout: 3d, next: done, timeout_next: call}
      call:   {type: task, task: follow_up_call, title: 电话提醒取药, assignee: nurses, due: 1d}
      done:   {type: exit}

Node types: wait (``duration``, ``until`` a local time of day, or ``event`` with ``timeout``), branch
(first ``when`` in the segment language that holds, else ``default``), split (A/B/n arms with percent),
send, task (a staff task), update (set a trait value on the person), webhook, exit. A node without
``next`` ends the journey (exit reason ``end``). Cycles are allowed only through a wait.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time as dtime
from typing import Any

from careloop.errors import ConfigError
from careloop.profiles import conditions as cond
from careloop.profiles.segment_compile import parse as parse_condition

TRIGGERS = ("event", "segment_entry", "segment_exit", "schedule", "relative_date", "api")
NODE_TYPES = ("wait", "branch", "split", "send", "task", "update", "webhook", "exit")
PURPOSES = ("care_follow_up", "service", "marketing", "research")
CHANNEL_KINDS = ("sms", "wechat", "app_push", "email", "outbox")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_OFFSET = re.compile(r"^([+-]?)(\d+)([dw])$")
_NAME = re.compile(r"^[A-Za-z0-9_\-\u4e00-\u9fff]{1,64}$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def seconds(text: Any, where: str) -> int:
    """'30m', '2h', '3d', '1w' -> seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(f"{where}: a duration looks like 30m, 2h, 3d or 1w, not {text!r}")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def offset_days(text: Any, where: str) -> int:
    """'-3d', '+1w', '0d' -> days."""
    m = _OFFSET.match(str(text))
    if not m:
        raise ConfigError(f"{where}: an offset looks like -3d, +7d or -1w, not {text!r}")
    days = int(m.group(2)) * (7 if m.group(3) == "w" else 1)
    return -days if m.group(1) == "-" else days


@dataclass(frozen=True)
class Trigger:
    type: str
    event: str | None = None  # event
    segment: str | None = None  # segment_entry / exit; the audience of schedule / relative_date
    cron: str | None = None  # schedule
    trait: str | None = None  # relative_date: a time trait (e.g. pdc_run_out, last_visit_at)
    key: str | None = None  # its key ("*" any)
    offset_days: int = 0  # relative_date: enter on trait date + offset


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    next: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)

    def targets(self) -> list[str]:
        """Every node this one can lead to."""
        out = [self.next] if self.next else []
        if self.type == "wait" and self.spec.get("timeout_next"):
            out.append(self.spec["timeout_next"])
        if self.type == "branch":
            out += [b["next"] for b in self.spec["branches"] if b.get("next")]
            if self.spec.get("default"):
                out.append(self.spec["default"])
        if self.type == "split":
            out += [a["next"] for a in self.spec["arms"] if a.get("next")]
        return out


@dataclass(frozen=True)
class Journey:
    name: str
    description: str
    trigger: Trigger
    start: str
    nodes: dict[str, Node]
    re_entry: str = "once"  # once | after | always
    re_entry_after_days: int = 0
    goal_event: str | None = None
    goal_within_seconds: int | None = None
    holdout_percent: float = 10.0
    cap_day: int | None = None  # the journey's own frequency caps (the global ones hold too)
    cap_week: int | None = None
    catch_up: str = "run"  # run | skip: what a timer that fires over `late_seconds` late does with sends
    late_seconds: int = 6 * 3600
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    def events_listened(self) -> set[str]:
        """Event names that move this journey: its trigger, its goal and its waits."""
        out = {self.trigger.event} if self.trigger.event else set()
        if self.goal_event:
            out.add(self.goal_event)
        out |= {n.spec["event"] for n in self.nodes.values() if n.type == "wait" and n.spec.get("event")}
        return out


def parse_journey(spec: Any) -> Journey:
    """A checked journey (raises ConfigError naming the bad part and what is expected)."""
    if not isinstance(spec, dict):
        raise ConfigError("a journey is a mapping with name, trigger, start and nodes")
    extra = set(spec) - {
        "name",
        "description",
        "trigger",
        "start",
        "nodes",
        "re_entry",
        "goal",
        "holdout",
        "caps",
        "catch_up",
    }
    if extra:
        raise ConfigError(f"journey: unknown field(s) {', '.join(sorted(extra))}")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError("journey `name`: 1-64 letters, digits, Chinese characters, '_' or '-'")
    where = f"journey {name}"
    raw_nodes = spec.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise ConfigError(f"{where}: `nodes` maps node ids to nodes")
    nodes = {str(k): _node(str(k), v, f"{where}.nodes.{k}") for k, v in raw_nodes.items()}
    start = spec.get("start")
    if start not in nodes:
        raise ConfigError(f"{where}: `start` must name one of the nodes ({', '.join(nodes)})")
    for n in nodes.values():
        for t in n.targets():
            if t not in nodes:
                raise ConfigError(f"{where}.nodes.{n.id}: leads to {t!r}, which is not a node")
    _check_cycles(nodes, where)
    unreachable = set(nodes) - _reachable(nodes, str(start))
    if unreachable:
        raise ConfigError(f"{where}: node(s) {', '.join(sorted(unreachable))} cannot be reached from `start`")
    policy, after = _re_entry(spec.get("re_entry"), where)
    goal_event, goal_within = _goal(spec.get("goal"), where)
    cap_day, cap_week = _caps(spec.get("caps"), where)
    catch_up, late = _catch_up(spec.get("catch_up"), where)
    return Journey(
        name=name,
        description=str(spec.get("description", "")),
        trigger=_trigger(spec.get("trigger"), where),
        start=str(start),
        nodes=nodes,
        re_entry=policy,
        re_entry_after_days=after,
        goal_event=goal_event,
        goal_within_seconds=goal_within,
        holdout_percent=_holdout(spec.get("holdout"), where),
        cap_day=cap_day,
        cap_week=cap_week,
        catch_up=catch_up,
        late_seconds=late,
        raw=spec,
    )


def _trigger(spec: Any, where: str) -> Trigger:
    w = f"{where}.trigger"
    if not isinstance(spec, dict) or spec.get("type") not in TRIGGERS:
        raise ConfigError(f"{w}: `type` is one of {', '.join(TRIGGERS)}")
    kind = spec["type"]
    allowed = {
        "event": {"type", "event"},
        "segment_entry": {"type", "segment"},
        "segment_exit": {"type", "segment"},
        "schedule": {"type", "cron", "segment"},
        "relative_date": {"type", "trait", "key", "offset", "segment"},
        "api": {"type"},
    }[kind]
    extra = set(spec) - allowed
    if extra:
        raise ConfigError(
            f"{w}: a {kind} trigger takes {', '.join(sorted(allowed - {'type'}))}; not {', '.join(sorted(extra))}"
        )
    for needed in allowed - {"type", "key", "segment"} - ({"offset"} if kind == "relative_date" else set()):
        if not isinstance(spec.get(needed), str) or not spec[needed]:
            raise ConfigError(f"{w}: a {kind} trigger needs `{needed}`")
    if kind in ("segment_entry", "segment_exit") and not spec.get("segment"):
        raise ConfigError(f"{w}: a {kind} trigger needs `segment`")
    if kind == "schedule":
        from careloop.journeys.cron import Cron

        Cron.parse(spec["cron"], w)
    return Trigger(
        type=kind,
        event=spec.get("event"),
        segment=spec.get("segment"),
        cron=spec.get("cron"),
        trait=spec.get("trait"),
        key=None if spec.get("key") is None else str(spec["key"]),
        offset_days=offset_days(spec.get("offset", "0d"), w) if kind == "relative_date" else 0,
    )


def _node(node_id: str, spec: Any, where: str) -> Node:
    if not _NAME.match(node_id):
        raise ConfigError(f"{where}: node ids are 1-64 letters, digits, '_' or '-'")
    if not isinstance(spec, dict) or spec.get("type") not in NODE_TYPES:
        raise ConfigError(f"{where}: `type` is one of {', '.join(NODE_TYPES)}")
    kind = spec["type"]
    nxt = spec.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise ConfigError(f"{where}: `next` names a node")
    body = {k: v for k, v in spec.items() if k not in ("type", "next")}
    checker = _CHECKS[kind]
    checker(body, where)
    if kind == "exit" and nxt:
        raise ConfigError(f"{where}: an exit node has no `next`")
    return Node(node_id, kind, nxt, body)


def _only(body: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = set(body) - allowed
    if extra:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}"
        )


def _check_wait(body: dict[str, Any], where: str) -> None:
    _only(body, {"duration", "until", "event", "timeout", "timeout_next"}, where)
    ways = [k for k in ("duration", "until", "event") if k in body]
    if len(ways) != 1:
        raise ConfigError(f"{where}: a wait has exactly one of `duration`, `until` (HH:MM local) or `event`")
    if "duration" in body:
        seconds(body["duration"], where)
    if "until" in body:
        try:
            dtime.fromisoformat(str(body["until"]))
        except ValueError:
            raise ConfigError(f"{where}: `until` is a local time of day like 09:30") from None
    if "event" in body:
        if not isinstance(body["event"], str) or not body["event"]:
            raise ConfigError(f"{where}: `event` names the event to wait for")
        if "timeout" not in body:
            raise ConfigError(f"{where}: waiting for an event needs a `timeout` (e.g. 3d)")
        seconds(body["timeout"], where)
    elif "timeout" in body or "timeout_next" in body:
        raise ConfigError(f"{where}: `timeout` belongs to a wait for an `event`")


def _check_branch(body: dict[str, Any], where: str) -> None:
    _only(body, {"branches", "default"}, where)
    branches = body.get("branches")
    if not isinstance(branches, list) or not branches:
        raise ConfigError(f"{where}: `branches` is a list of {{when: CONDITION, next: NODE}}")
    for i, b in enumerate(branches):
        if not isinstance(b, dict) or set(b) - {"when", "next", "name"} or "when" not in b:
            raise ConfigError(f"{where}.branches[{i}]: {{when: CONDITION, next: NODE}}")
        parse_condition(b["when"], f"{where}.branches[{i}].when")


def _check_split(body: dict[str, Any], where: str) -> None:
    _only(body, {"arms"}, where)
    arms = body.get("arms")
    if not isinstance(arms, list) or len(arms) < 2:
        raise ConfigError(f"{where}: `arms` lists two or more {{name, percent, next}}")
    total = 0.0
    names = set()
    for i, a in enumerate(arms):
        if not isinstance(a, dict) or set(a) - {"name", "percent", "next"} or "name" not in a:
            raise ConfigError(f"{where}.arms[{i}]: {{name: A, percent: 50, next: NODE}}")
        pct = a.get("percent")
        if not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 < pct <= 100:
            raise ConfigError(f"{where}.arms[{i}]: `percent` is a number in (0, 100]")
        total += float(pct)
        names.add(a["name"])
    if abs(total - 100) > 1e-6:
        raise ConfigError(f"{where}: the arms' percents add up to {total:g}, not 100")
    if len(names) != len(arms):
        raise ConfigError(f"{where}: arm names repeat")


def _check_send(body: dict[str, Any], where: str) -> None:
    _only(body, {"channel", "content", "purpose", "personalised"}, where)
    if body.get("channel") not in CHANNEL_KINDS:
        raise ConfigError(f"{where}: `channel` is one of {', '.join(CHANNEL_KINDS)}")
    if not isinstance(body.get("content"), str) or not body["content"]:
        raise ConfigError(f"{where}: `content` names a content item (`careloop content list`)")
    if body.get("purpose", "marketing") not in PURPOSES:
        raise ConfigError(f"{where}: `purpose` is one of {', '.join(PURPOSES)} (default marketing)")


def _check_task(body: dict[str, Any], where: str) -> None:
    _only(body, {"task", "title", "assignee", "due"}, where)
    if not isinstance(body.get("task"), str) or not isinstance(body.get("title"), str):
        raise ConfigError(f"{where}: a task needs `task` (its kind, e.g. follow_up_call) and `title`")
    if "due" in body:
        seconds(body["due"], where)


def _check_update(body: dict[str, Any], where: str) -> None:
    _only(body, {"trait", "key", "value"}, where)
    if not isinstance(body.get("trait"), str) or "value" not in body:
        raise ConfigError(f"{where}: an update sets `trait` (and optional `key`) to `value`")
    if not isinstance(body["value"], str | int | float) or isinstance(body["value"], bool):
        raise ConfigError(f"{where}: `value` is a number or a text")
    cond.reject_nul(body["value"], where)


def _check_webhook(body: dict[str, Any], where: str) -> None:
    _only(body, {"url", "payload"}, where)
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: `url` is an http(s) URL")


def _check_exit(body: dict[str, Any], where: str) -> None:
    _only(body, set(), where)


_CHECKS = {
    "wait": _check_wait,
    "branch": _check_branch,
    "split": _check_split,
    "send": _check_send,
    "task": _check_task,
    "update": _check_update,
    "webhook": _check_webhook,
    "exit": _check_exit,
}


def _reachable(nodes: dict[str, Node], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(nodes[n].targets())
    return seen


def _check_cycles(nodes: dict[str, Node], where: str) -> None:
    """A cycle must pass through a wait: otherwise one entry would loop forever without time passing."""
    instant = {nid: [t for t in n.targets()] for nid, n in nodes.items() if n.type != "wait"}
    state: dict[str, int] = {}

    def visit(nid: str, path: list[str]) -> None:
        state[nid] = 1
        for t in instant.get(nid, []):
            if t not in instant:
                continue
            if state.get(t) == 1:
                cycle = [*path[path.index(t) :], t] if t in path else [nid, t]
                raise ConfigError(f"{where}: the cycle {' -> '.join(cycle)} has no wait; add one")
            if not state.get(t):
                visit(t, [*path, t])
        state[nid] = 2

    for nid in instant:
        if not state.get(nid):
            visit(nid, [nid])


def _re_entry(spec: Any, where: str) -> tuple[str, int]:
    if spec is None:
        return "once", 0
    if not isinstance(spec, dict) or spec.get("policy") not in ("once", "after", "always"):
        raise ConfigError(f"{where}.re_entry: {{policy: once | after | always, after: 30d}}")
    if spec["policy"] == "after":
        return "after", max(1, offset_days(spec.get("after", ""), f"{where}.re_entry.after"))
    return str(spec["policy"]), 0


def _goal(spec: Any, where: str) -> tuple[str | None, int | None]:
    if spec is None:
        return None, None
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("event"), str)
        or set(spec) - {"event", "within"}
    ):
        raise ConfigError(f"{where}.goal: {{event: NAME, within: 14d}}")
    within = seconds(spec["within"], f"{where}.goal.within") if "within" in spec else None
    return spec["event"], within


def _catch_up(spec: Any, where: str) -> tuple[str, int]:
    """After downtime: `run` sends late (default); `skip` drops sends of timers over `max_late` late."""
    if spec is None:
        return "run", 6 * 3600
    if (
        not isinstance(spec, dict)
        or spec.get("policy") not in ("run", "skip")
        or set(spec) - {"policy", "max_late"}
    ):
        raise ConfigError(f"{where}.catch_up: {{policy: run | skip, max_late: 6h}}")
    return str(spec["policy"]), seconds(spec.get("max_late", "6h"), f"{where}.catch_up.max_late")


def _caps(spec: Any, where: str) -> tuple[int | None, int | None]:
    if spec is None:
        return None, None
    if not isinstance(spec, dict) or set(spec) - {"per_day", "per_week"}:
        raise ConfigError(f"{where}.caps: {{per_day: 1, per_week: 3}}")
    for k, v in spec.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{where}.caps.{k}: a whole number >= 0")
    return spec.get("per_day"), spec.get("per_week")


def _holdout(spec: Any, where: str) -> float:
    if spec is None:
        return 10.0
    if spec is False:
        return 0.0
    if not isinstance(spec, dict) or set(spec) - {"percent"}:
        raise ConfigError(f"{where}.holdout: {{percent: 10}} (or false for none)")
    pct = spec.get("percent", 10)
    if not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 <= pct < 100:
        raise ConfigError(f"{where}.holdout.percent: a number in [0, 100)")
    return float(pct)
