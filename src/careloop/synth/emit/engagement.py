"""Engagement tables: behavioural events with JSON properties, feedback, consents, messages, touches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from careloop.synth import behaviour, catalog, outreach, texts
from careloop.synth.arrays import (
    Column,
    IntArray,
    bools,
    const,
    floats,
    int_text,
    join,
    local_day,
    null_where,
    numbered,
    permute,
    pick,
    row_keys,
    timestamps,
    where,
)
from careloop.synth.care import (
    CONSULT_MODES,
)
from careloop.synth.emit.base import (
    IH,
    MSG_CHANNELS,
    ORG_KEYS,
    EmitterBase,
)
from careloop.synth.registry import HIS_SOURCES


class EngagementRecords(EmitterBase):
    def engagement(self) -> None:
        self._events()
        self._feedback()
        self._crm()

    def _events(self) -> None:
        d = self.d
        ev = d.events
        keys = row_keys("EV", d.chunk, ev.n)
        name = pick(behaviour.EVENT_NAMES, ev.name)
        name = where(
            ev.event_type == behaviour.SCREEN, pick(texts.APP_SCREENS, ev.a % len(texts.APP_SCREENS)), name
        )
        name = where(
            ev.event_type == behaviour.PAGE, pick(texts.WEB_PAGES, ev.a % len(texts.WEB_PAGES)), name
        )
        props = self._properties(ev)
        device = numbered("dev", permute(d.people.person_id[ev.person], 53, 10**12), 12)
        for src, s in enumerate(behaviour.EVENT_SOURCES):
            sel = np.flatnonzero(ev.source == src)
            t = pa.array(sel)
            pk = self._pk(s, ev.person[sel])
            cols: dict[str, Column] = {
                "key": keys.take(t),
                "event_type": pick(behaviour.EVENT_TYPES, ev.event_type[sel]),
                "name": name.take(t),
                "occurred_at": timestamps(ev.at[sel]),
                "channel": pick(behaviour.EVENT_CHANNELS, ev.channel[sel]),
                "patient_key": pk,
                "properties": props.take(t),
            }
            if s == "app":
                cols["user_id"] = pk
                cols["anonymous_id"] = device.take(t)
            if s in ("wechat_oa", "wechat_mp"):
                cols["openid"] = pk
            self.add(s, "event", cols)

    def _properties(self, ev: behaviour.Events) -> Column:
        """JSON properties per event name (values from fixed vocabularies, so no escaping is needed)."""
        E = behaviour.E
        a, b = ev.a, ev.b
        groups: list[tuple[IntArray, Column]] = []

        def add(names: tuple[str, ...], build: Callable[[IntArray], Column]) -> None:
            sel = np.flatnonzero(np.isin(ev.name, [E[x] for x in names]))
            if len(sel):
                groups.append((sel, build(sel)))

        q = '"'
        add(
            ("app_open",),
            lambda s: join(
                '{"os":"',
                pick(("iOS", "Android", "HarmonyOS"), ev.person[s] % 3),
                '","app_version":"3.',
                int_text(a[s] % 6),
                ".",
                int_text(b[s] % 4),
                '"}',
            ),
        )
        add(("screen_view",), lambda s: join('{"screen":"', pick(texts.APP_SCREENS, a[s] % 8), '"}'))
        add(
            ("article_view", "search"),
            lambda s: join(
                '{"article_id":"',
                texts.article_ids(self.rng, a[s] % 10),
                '","topic":"',
                pick(texts.ARTICLE_TOPICS, a[s] % 10),
                '","read_seconds":',
                int_text(b[s]),
                "}",
            ),
        )
        add(("refill_reminder_clicked",), lambda s: join('{"days_left":', int_text(a[s] % 7 + 1), "}"))
        add(
            ("medication_checked_in",),
            lambda s: join('{"on_time":', pick(("true", "false"), (b[s] % 5 == 0).astype(np.int64)), "}"),
        )
        add(
            ("report_viewed",),
            lambda s: join('{"report_type":"', pick(("检验报告", "影像报告", "病理报告"), a[s] % 3), q, "}"),
        )
        add(("points_redeemed",), lambda s: join('{"points":', int_text((a[s] + 1) * 100), "}"))
        add(("page_view",), lambda s: join('{"referrer":"', pick(texts.REFERRERS, b[s] % 5), '"}'))
        add(
            ("subscribe",),
            lambda s: join('{"scene":"', pick(("qrcode", "search", "article", "menu"), a[s] % 4), '"}'),
        )
        add(("menu_click",), lambda s: join('{"menu":"', pick(texts.OA_MENUS, a[s] % 6), '"}'))
        add(
            ("template_msg_clicked",),
            lambda s: join('{"template":"', pick(("就诊提醒", "报告通知", "随访提醒"), a[s] % 3), '"}'),
        )
        add(("mp_open",), lambda s: join('{"scene":', int_text(1000 + a[s] % 10 * 7), "}"))
        add(("queue_checked",), lambda s: join('{"waiting":', int_text(b[s] % 40), "}"))
        add(("payment_completed",), lambda s: join('{"amount_yuan":', int_text(b[s] * 3 % 600 + 10), "}"))
        add(
            ("appointment_booked",),
            lambda s: join('{"org_key":"', pick(ORG_KEYS, a[s]), '","lead_days":', int_text(b[s]), "}"),
        )
        add(
            ("consultation_started",),
            lambda s: join(
                '{"mode":"',
                pick(CONSULT_MODES, a[s] % 3),
                '","condition":"',
                pick([c.code for c in catalog.CONDITIONS] + [""], np.where(b[s] >= 0, b[s], 5)),
                '"}',
            ),
        )
        add(
            ("call_inbound",),
            lambda s: join(
                '{"reason":"', pick(texts.CALL_REASONS, a[s] % 6), '","duration_s":', int_text(b[s]), "}"
            ),
        )
        add(
            ("call_outbound",),
            lambda s: join('{"purpose":"出院随访","answered":', pick(("false", "true"), b[s] % 2), "}"),
        )
        idx = np.concatenate([g[0] for g in groups]) if groups else np.zeros(0, np.int64)
        values = pa.concat_arrays([g[1] for g in groups]) if groups else pa.array([], pa.string())
        inverse = np.full(ev.n, -1, dtype=np.int64)
        inverse[idx] = np.arange(len(idx))
        return values.take(pa.array(inverse, mask=inverse < 0))

    def _feedback(self) -> None:
        d = self.d
        fb = d.feedback
        keys = row_keys("FB", d.chunk, fb.n)
        text = texts.feedback_text(self.rng, fb.score, fb.has_text)
        targets = [(s, fb.source == i) for i, s in enumerate(HIS_SOURCES)]
        targets += [(IH, fb.source == -1), ("call_centre", fb.source == -2)]
        vis = np.maximum(fb.visit, 0)
        for s, in_s in targets:
            sel = np.flatnonzero(in_s)
            linked = fb.visit[sel] >= 0
            dup = self.visit_dup[vis[sel]] & linked
            self.add(
                s,
                "feedback",
                {
                    "key": keys.take(pa.array(sel)),
                    "patient_key": self._pk(s, fb.person[sel], dup),
                    "submitted_at": timestamps(fb.at[sel]),
                    "score": floats(fb.score[sel].astype(np.float64)),
                    "scale_max": floats(np.full(len(sel), 5.0)),
                    "text": text.take(pa.array(sel)),
                    "channel": pick(behaviour.FEEDBACK_CHANNELS, fb.channel[sel]),
                    "encounter_key": null_where(self.enc_keys.take(pa.array(vis[sel])), ~linked),
                    "org_key": pick(ORG_KEYS, fb.org[sel]),
                },
            )

    def _crm(self) -> None:
        d = self.d
        defs = self.net.campaigns
        c = d.consents
        m = len(c.person)
        purpose_category = ("health", "personal", "health", "behaviour", "health")
        notice = np.where(local_day(c.at) < 20_148, 0, 1)  # 2025-03-01
        self.add(
            "crm",
            "consent",
            {
                "key": row_keys("CN", d.chunk, m),
                "patient_key": self._pk("crm", c.person),
                "purpose": pick(outreach.PURPOSES, c.purpose),
                "status": pick(outreach.CONSENT_STATUSES, c.status),
                "recorded_at": timestamps(c.at),
                "data_category": pick(purpose_category, c.purpose),
                "channel": pick(MSG_CHANNELS, np.maximum(c.channel, 0), c.channel >= 0),
                "recipient": null_where(const(outreach.PHARMA_RECIPIENT, m), ~c.recipient),
                "notice_version": pick(("v2023.2", "v2025.1"), notice),
                "capture_source": pick(outreach.CAPTURE_SOURCES, c.capture),
                "expires_at": timestamps(c.expires, c.expires >= 0),
                "proof": numbered("form-", permute(np.arange(m) + d.chunk * 10**7, 61, 10**10), 10),
                "by_guardian": bools(c.by_guardian),
            },
        )
        msgs = d.messages
        mkeys = row_keys("MS", d.chunk, msgs.n)
        camp_keys = pick([x.key for x in defs], msgs.campaign)
        channel = np.array([x.channel for x in defs])[msgs.campaign]
        template = pick([f"TPL-{x.objective}".upper() for x in defs], msgs.campaign)
        self.add(
            "crm",
            "message",
            {
                "key": mkeys,
                "patient_key": self._pk("crm", msgs.person),
                "channel": pick(MSG_CHANNELS, channel),
                "status": pick(outreach.MESSAGE_STATUSES, msgs.status),
                "created_at": timestamps(msgs.created),
                "campaign_key": camp_keys,
                "template": template,
                "content": outreach.message_content(msgs, defs),
                "sent_at": timestamps(msgs.sent, msgs.sent >= 0),
                "block_reason": pick(
                    outreach.BLOCK_REASONS, np.maximum(msgs.block_reason, 0), msgs.block_reason >= 0
                ),
                "cost": floats(msgs.cost),
                "is_holdout": bools(msgs.holdout),
            },
        )
        t = d.touches
        tm = pa.array(t.message)
        self.add(
            "crm",
            "touch",
            {
                "key": row_keys("TC", d.chunk, len(t.person)),
                "patient_key": self._pk("crm", t.person),
                "touch_type": pick(outreach.TOUCH_TYPES, t.kind),
                "occurred_at": timestamps(t.at),
                "message_key": mkeys.take(tm),
                "campaign_key": camp_keys.take(tm),
                "channel": pick(MSG_CHANNELS, channel[t.message]),
                "value": floats(np.nan_to_num(t.value), ~np.isnan(t.value) & (t.value > 0)),
            },
        )
        self.campaign_cost = np.bincount(msgs.campaign, weights=msgs.cost, minlength=len(defs)).astype(
            np.float64
        )
