"""Model runs in the audit chain: every fit (`model.fit`) and every scoring run (`model.score`) of any
family is one entry naming the model, its family and version and — for a fit — the first 16 hex digits
of the data fingerprint. Counts only: no person ids, no scores (those are in the traits the run wrote).

`save_fitted` is how a command keeps a fitted model: it saves the card and artefact in the registry and
appends the `model.fit` entry, so a kept model always has its audit entry. A fit on a file (`--transactions`)
is audited too, with ``source: file``: its rows are person-level data even when they never enter the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careloop.models.base import ModelCard, registry
from careloop.privacy.audit import audit_event, cli_actor
from careloop.storage.workspace import WorkspaceStore


def record_fit(
    store: WorkspaceStore, card: ModelCard, *, source: str = "store", actor: str | None = None
) -> None:
    """Append the `model.fit` entry of a saved model."""
    audit_event(
        store,
        actor=actor or cli_actor(),
        action="model.fit",
        target_kind="model",
        target_id=card.name,
        detail={
            "family": card.family,
            "version": card.family_version,
            "data": card.data_hash[:16],
            "source": source,
        },
    )


def save_fitted(
    store: WorkspaceStore, card: ModelCard, artefact: Any, *, source: str = "store", actor: str | None = None
) -> None:
    """Save a fitted model under its card's name and record the fit in the audit chain."""
    registry(store.workspace).save(card, artefact)
    record_fit(store, card, source=source, actor=actor)


def record_scores(
    store: WorkspaceStore,
    *,
    model: str,
    family: str,
    persons: int,
    traits: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> None:
    """Append the `model.score` entry of a scoring run: how many persons, which traits were written."""
    audit_event(
        store,
        actor=actor or cli_actor(),
        action="model.score",
        target_kind="model",
        target_id=model,
        detail={"family": family, "persons": int(persons), "traits": sorted(traits or {})},
    )
