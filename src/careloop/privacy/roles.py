"""Roles: the one table of who may do what, and what each role sees of a patient.

Every API route declares the permission it needs (`careloop.api.security.requires`); a role is a set of
permissions plus a `Viewer` — the field-level masking of `careloop.patients.viewer` — that every
person-level read is built with. Nothing else decides what a role may call or see.

A role's permissions may use a trailing wildcard (``dsr:*`` grants every ``dsr:`` permission,
including ones declared later). Permissions are declared in `PERMISSIONS`; naming an undeclared one in
a route or a role is an error at import, so a typo cannot silently deny or grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from careloop.errors import ConfigError
from careloop.patients.viewer import SECTIONS, Viewer, Visibility

#: every permission careloop knows, with what it lets a caller do
PERMISSIONS: dict[str, str] = {
    "schema:read": "the data dictionary (classes and levels of every column)",
    "workspaces:read": "the list of workspaces in the store",
    "ingest:read": "row counts and ingest runs",
    "ingest:run": "run ingestion",
    "quarantine:read": "quarantined rows (original values as the role's viewer shows them)",
    "patients:find": "look persons up by phone or ID number",
    "patients:read": "person-level reads: the patient 360, a person's traits, tags and persona",
    "patients:read_identifiers": "identifiers in the clear (names, phones, ID numbers unmasked)",
    "segments:read": "segments with their counts (aggregates)",
    "segments:members": "person-level segment results: members, explanations, previews, lookalikes",
    "segments:write": "create and refresh segments, save the seed personas",
    "personas:read": "persona runs: clusters and their descriptions (aggregates)",
    "models:fit": "model runs: build personas, fit and score models",
    "journeys:read": "journeys and their statistics",
    "journeys:write": "save journey drafts",
    "journeys:publish": "publish, pause and archive journeys",
    "journeys:enter": "enter persons into a published journey (the API trigger)",
    "tasks:read": "staff tasks from journeys (call the patient, ...)",
    "tasks:write": "record a task's outcome",
    "content:read": "the content library",
    "content:write": "draft content, submit it for review, retire it",
    "content:approve": "approve or reject submitted content (medical-legal review)",
    "consent:read": "the consent ledger",
    "consent:write": "record and withdraw consents",
    "audit:read": "the audit log",
    "dsr:read": "data-subject requests and their deadlines",
    "dsr:write": "open and carry out data-subject requests (access, correction, deletion)",
    "export:person_level": "exports of person-level data (with a recorded purpose)",
    "export:aggregate": "aggregate exports (k-anonymity checked)",
    "hcp:read": "healthcare professionals (doctors) and their engagement",
    "users:manage": "users, roles and API keys",
}


@dataclass(frozen=True)
class Role:
    name: str
    description: str
    grants: tuple[str, ...]
    viewer: Viewer
    #: permissions never granted, whatever `grants` says (admin: everything but clear identifiers)
    denies: tuple[str, ...] = ()
    permissions: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        for p in (*self.grants, *self.denies):
            check_permission(p, allow_wildcard=True)
        object.__setattr__(
            self, "permissions", frozenset(expand(self.grants)) - frozenset(expand(self.denies))
        )

    def allows(self, permission: str) -> bool:
        return permission in self.permissions


def check_permission(permission: str, *, allow_wildcard: bool = False) -> str:
    """`permission` if careloop declares it (or, with `allow_wildcard`, it is ``*`` or ``area:*``)."""
    if permission in PERMISSIONS:
        return permission
    if allow_wildcard and (
        permission == "*"
        or (permission.endswith(":*") and any(p.startswith(permission[:-1]) for p in PERMISSIONS))
    ):
        return permission
    raise ConfigError(
        f"unknown permission {permission!r}; declared permissions are in careloop.privacy.roles.PERMISSIONS"
    )


def expand(patterns: tuple[str, ...] | list[str]) -> set[str]:
    """The declared permissions a list of permissions and wildcards names."""
    out: set[str] = set()
    for p in patterns:
        if p == "*":
            out |= PERMISSIONS.keys()
        elif p.endswith(":*"):
            out |= {q for q in PERMISSIONS if q.startswith(p[:-1])}
        else:
            out.add(check_permission(p))
    return out


_ALL_SECTIONS = frozenset(SECTIONS)
#: identifier kinds a marketer never sees, even masked
_NEVER_FOR_MARKETING = ("id_number", "insurance_number", "bank_card", "passport")
#: what a pseudonymous reader (analyst) may see of a 360: no identifiers, no record references
_PSEUDONYMOUS_SECTIONS = frozenset(
    {"golden", "encounters", "conditions", "medications", "appointments", "events", "consents", "messages"}
)


def _no_person_data(role: str) -> Viewer:
    return Viewer(role=role, default=Visibility.HIDDEN, sections=frozenset(), records=False)


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role(
            "admin",
            "runs careloop: users and keys, ingestion, segments, journeys, content; identifiers masked",
            grants=("*",),
            denies=("patients:read_identifiers",),
            viewer=Viewer(role="admin"),
        ),
        Role(
            "dpo",
            "data-protection officer: sees everything unmasked (every access is audited), consent, "
            "audit, data-subject requests, person-level exports; changes no marketing",
            grants=(
                "schema:read",
                "workspaces:read",
                "ingest:read",
                "quarantine:read",
                "patients:find",
                "patients:read",
                "patients:read_identifiers",
                "segments:read",
                "segments:members",
                "personas:read",
                "journeys:read",
                "tasks:read",
                "content:read",
                "consent:*",
                "audit:*",
                "dsr:*",
                "export:*",
                "hcp:read",
            ),
            viewer=Viewer(role="dpo", default=Visibility.CLEAR),
        ),
        Role(
            "marketer",
            "segments, journeys and content drafts; sees patients masked (张*明, 138****5678), no ID numbers",
            grants=(
                "patients:find",
                "patients:read",
                "segments:*",
                "personas:read",
                "journeys:*",
                "tasks:*",
                "content:read",
                "content:write",
                "consent:read",
                "export:aggregate",
            ),
            viewer=Viewer(
                role="marketer",
                kinds={k: Visibility.HIDDEN for k in _NEVER_FOR_MARKETING},
                sections=_ALL_SECTIONS - {"history"},
            ),
        ),
        Role(
            "analyst",
            "segments, personas and models over pseudonyms: person ids only, no names, phones or records",
            grants=(
                "schema:read",
                "ingest:read",
                "patients:read",
                "segments:*",
                "personas:read",
                "models:fit",
                "journeys:read",
                "export:aggregate",
            ),
            viewer=Viewer(
                role="analyst", default=Visibility.HIDDEN, sections=_PSEUDONYMOUS_SECTIONS, records=False
            ),
        ),
        Role(
            "medical_rep",
            "HCP (doctor) data and aggregates only: segment counts, persona descriptions",
            grants=("hcp:read", "segments:read", "personas:read", "export:aggregate"),
            viewer=_no_person_data("medical_rep"),
        ),
        Role(
            "reviewer",
            "medical-legal review of content: reads, approves or rejects it",
            grants=("content:read", "content:approve"),
            viewer=_no_person_data("reviewer"),
        ),
        Role(
            "engineer",
            "schemas, ingestion runs and the quarantine (original values hidden); no person data",
            grants=("schema:read", "workspaces:read", "ingest:*", "quarantine:read"),
            viewer=_no_person_data("engineer"),
        ),
    )
}


def get_role(name: str) -> Role:
    try:
        return ROLES[name]
    except KeyError:
        raise ConfigError(f"unknown role {name!r}; roles are {', '.join(ROLES)}") from None


def check_roles() -> None:
    """The table's own rules: clear identifiers exactly for roles holding patients:read_identifiers,
    person-level sections only for roles that may read patients."""
    for r in ROLES.values():
        clear = r.viewer.default is Visibility.CLEAR or Visibility.CLEAR in r.viewer.kinds.values()
        if clear != r.allows("patients:read_identifiers"):
            raise ConfigError(f"role {r.name}: a clear viewer needs patients:read_identifiers and vice versa")
        if r.viewer.sections and not r.allows("patients:read"):
            raise ConfigError(f"role {r.name}: 360 sections without patients:read")


check_roles()
