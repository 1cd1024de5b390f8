"""Channel plugins found through Python entry points, and channel instances built from settings.

Any installed distribution can add a channel by declaring, in its ``pyproject.toml``::

    [project.entry-points."careloop.channels"]
    my_sms = "my_package.sms:MySmsChannel"

The entry-point name must equal the class's `name`. Two distributions declaring one name differently, an
entry point that is not a `Channel` subclass, or one that cannot be imported stop discovery with a
`ConfigError` naming both sides — a channel silently replaced by another would send through the wrong
provider.

Settings come from the caller (a config file) and, for every field the caller leaves out, from the
environment variable ``CARELOOP_CHANNEL_<NAME>_<FIELD>`` (``CARELOOP_CHANNEL_ALIYUN_SMS_ACCESS_KEY_SECRET``).
Secrets therefore live in config files or the environment, never in the database.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from careloop.channels.base import KINDS, Channel
from careloop.clock import SYSTEM_CLOCK, Clock
from careloop.errors import ConfigError

if TYPE_CHECKING:
    from careloop.storage import WorkspaceStore

GROUP = "careloop.channels"


@cache
def load_channels() -> dict[str, type[Channel[Any]]]:
    """Every channel class installed, by name (cached; `load_channels.cache_clear()` re-reads)."""
    found: dict[str, tuple[str, type[Channel[Any]]]] = {}
    for ep in entry_points(group=GROUP):
        origin = f"{ep.value}" + (f" (from {ep.dist.name})" if ep.dist is not None else "")
        try:
            obj = ep.load()
        except Exception as e:
            raise ConfigError(
                f"channel plugin {ep.name!r} = {origin} cannot be imported ({type(e).__name__}: {e}); "
                "fix or uninstall the package that declares it"
            ) from e
        if not (isinstance(obj, type) and issubclass(obj, Channel)):
            raise ConfigError(
                f"channel plugin {ep.name!r} = {origin} is not a subclass of careloop.channels.Channel; "
                "point the entry point at the channel class"
            )
        if inspect.isabstract(obj):
            raise ConfigError(
                f"channel plugin {ep.name!r} = {origin} is abstract: implement _send and parse_receipts"
            )
        if getattr(obj, "name", None) != ep.name:
            raise ConfigError(
                f"channel plugin {ep.name!r} = {origin} has name {getattr(obj, 'name', None)!r}: "
                "the entry-point name and the class's `name` must be the same"
            )
        if getattr(obj, "kind", None) not in KINDS:
            raise ConfigError(
                f"channel plugin {ep.name!r} = {origin} has kind {getattr(obj, 'kind', None)!r}; "
                f"a channel's kind is one of {', '.join(KINDS)}"
            )
        if ep.name in found and found[ep.name][0] != ep.value:
            raise ConfigError(
                f"two plugins declare the channel {ep.name!r}: {found[ep.name][0]} and {origin}; "
                "uninstall one of them or give one another name"
            )
        found[ep.name] = (ep.value, obj)
    return {name: found[name][1] for name in sorted(found)}


def channel_class(name: str) -> type[Channel[Any]]:
    channels = load_channels()
    if name not in channels:
        known = ", ".join(channels) or "none"
        raise ConfigError(
            f"no channel named {name!r} is installed (installed: {known}); "
            "see `careloop channel list` and docs/channels.md"
        )
    return channels[name]


def env_prefix(name: str) -> str:
    """The environment prefix of a channel's settings: ``CARELOOP_CHANNEL_ALIYUN_SMS_``."""
    return "CARELOOP_CHANNEL_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_"


def build_channel(
    name: str,
    config: Mapping[str, Any] | None = None,
    *,
    store: WorkspaceStore | None = None,
    clock: Clock = SYSTEM_CLOCK,
    env: Mapping[str, str] | None = None,
) -> Channel[Any]:
    """A ready channel: `config` validated by the channel's pydantic model, missing fields taken from
    ``CARELOOP_CHANNEL_<NAME>_<FIELD>`` in `env` (default: the process environment). Channels that write
    to the database (the outbox) need `store`."""
    cls = channel_class(name)
    data = dict(config or {})
    environ = os.environ if env is None else env
    prefix = env_prefix(name)
    for field_name in cls.Config.model_fields:
        if field_name not in data and prefix + field_name.upper() in environ:
            data[field_name] = environ[prefix + field_name.upper()]
    try:
        settings = cls.Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(settings)"
            hint = ""
            if err["type"] == "missing" and len(err["loc"]) == 1:
                hint = f" (set it in the channel's settings or {prefix}{str(err['loc'][0]).upper()})"
            problems.append(f"{where}: {err['msg']}{hint}")
        raise ConfigError(
            f"channel {name!r} settings are not valid: "
            + "; ".join(problems)
            + f". See `careloop channel schema {name}`"
        ) from None
    ok, hint = cls.available()
    if not ok:
        raise ConfigError(f"channel {name!r} {hint}")
    if cls.needs_store and store is None:
        raise ConfigError(
            f"channel {name!r} writes to the database: build it with a WorkspaceStore (store=...)"
        )
    return cls.create(settings, store=store, clock=clock)
