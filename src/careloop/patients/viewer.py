"""Who is looking: the one place that decides what a viewer of a patient 360 sees, field by field.

Every 360 is built for a `Viewer`. For each kind of personal identifier (name, phone, ID number,
address, e-mail, openid, unionid, app user id, HIS number, other identifiers) the viewer has a
`Visibility`:

- ``masked`` (the default for every kind): decrypted, then masked with `careloop.privacy.fields.mask`
  (张*明, 138****5678, 1101**********002X);
- ``clear``: decrypted and shown as stored;
- ``hidden``: never decrypted; shown as ``"****"``.

A viewer may also be limited to some sections of the 360 (e.g. no clinical sections for a call-centre
agent); sections it may not see are left out of the document. A pseudonymous viewer (``records=False``)
sees persons by their person id only: no source record references (``SOURCE:KEY``, patient keys, which
are identifiers such as HIS numbers), no look-ups by identifier.

`MASKED_VIEWER` is what the CLI uses. Each API role has its own viewer (`careloop.privacy.roles`): the
API maps the authenticated caller's role to it and passes it to `PatientView`; nothing else in the 360
decides what to decrypt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from careloop.privacy.fields import FieldCipher, mask

HIDDEN_TEXT = "****"

#: the sections of a patient 360, in document order
SECTIONS = (
    "identifiers",
    "golden",
    "sources",
    "encounters",
    "conditions",
    "medications",
    "appointments",
    "events",
    "consents",
    "messages",
    "household",
    "history",
)


class Visibility(StrEnum):
    CLEAR = "clear"
    MASKED = "masked"
    HIDDEN = "hidden"


@dataclass(frozen=True)
class Viewer:
    """What one kind of user may see: a visibility per identifier kind, the sections shown and whether
    source record references are shown (False: pseudonymous, person ids only)."""

    role: str = "masked"
    default: Visibility = Visibility.MASKED
    kinds: Mapping[str, Visibility] = field(default_factory=dict)
    sections: frozenset[str] = frozenset(SECTIONS)
    records: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown 360 section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")

    def visibility(self, kind: str) -> Visibility:
        return self.kinds.get(kind, self.default)

    def may_see(self, section: str) -> bool:
        return section in self.sections


#: the view of the CLI (and of callers without a role): all identifiers masked, every section shown
MASKED_VIEWER = Viewer()


class Revealer:
    """Turns stored ciphertext into what a viewer may see; decrypts nothing a viewer may not see."""

    def __init__(self, viewer: Viewer, cipher: FieldCipher) -> None:
        self.viewer = viewer
        self.cipher = cipher

    def ciphertext(self, token: str | None, stored_kind: str, shown_as: str | None = None) -> str | None:
        """A stored value; `stored_kind` is the PII kind it was encrypted under (its associated data),
        `shown_as` the kind that decides visibility and masking (e.g. a `phone` identifier stored as
        kind `identifier`)."""
        if token is None:
            return None
        kind = shown_as or stored_kind
        seen = self.viewer.visibility(kind)
        if seen is Visibility.HIDDEN:
            return HIDDEN_TEXT
        plain = self.cipher.decrypt(token, stored_kind)
        return plain if seen is Visibility.CLEAR else mask(plain, kind)

    def plain(self, value: str | None, kind: str) -> str | None:
        """A value stored unencrypted (a record key that is an identifier, e.g. a HIS number)."""
        if value is None:
            return None
        seen = self.viewer.visibility(kind)
        if seen is Visibility.HIDDEN:
            return HIDDEN_TEXT
        return value if seen is Visibility.CLEAR else mask(value, kind)
