"""Shared state of the emitter: the chunk, the keys of every person in every source, the tables."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from careloop.synth import registry, sources
from careloop.synth.arrays import BoolArray, Column, FloatArray, IntArray
from careloop.synth.chunk import ChunkData, Network
from careloop.synth.registry import ORGS

Tables = dict[tuple[str, str], list[dict[str, Column]]]
IH = "internet_hospital"
ORG_KEYS = [o.key for o in ORGS]
PAYER_KEYS = [p[0] for p in registry.PAYERS]
ENC_CODE = ("AMB", "IMP", "EMER", "VR", "AMB", "AMB")
ENC_DESC = ("门诊", "住院", "急诊", "互联网复诊", "慢病随访", "健康体检")
ENC_PREFIX = ("MZ", "ZY", "JZ", "WZ", "SF", "TJ")
MSG_CHANNELS = ("sms", "wechat", "app_push")


class EmitterBase:
    """State shared by the emitting steps; the steps are mixins (patients, clinical, engagement, truth)."""

    member: dict[str, BoolArray]
    visit_dup: BoolArray  # per visit: filed under the patient's duplicate HIS record
    enc_keys: Column  # per visit: encounter key
    rx_keys: Column
    appt_keys: Column
    campaign_cost: FloatArray

    def __init__(self, net: Network, data: ChunkData) -> None:
        self.net = net
        self.d = data
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([net.seed, 2, data.chunk])))
        self.tables: Tables = defaultdict(list)
        self.truth: dict[str, list[dict[str, Column]]] = defaultdict(list)
        self.keys = sources.make_keys(self.rng, data.people, net.patients)
        self.dup: dict[str, BoolArray] = {}

    def add(self, source: str, entity: str, columns: dict[str, Column]) -> None:
        self.tables[(source, entity)].append(columns)

    def _pk(self, source: str, person: IntArray, use_dup: BoolArray | None = None) -> Column:
        return self.keys.of(source, person, use_dup if source in self.keys.dup else None)
