"""User plugins: `--plugin module:Class` sees sessions inside the workers.

A plugin is a class with any of these methods (all optional):
    on_start(session)            a session was created (its first packet is counted next)
    on_packet(session, packet)   every packet, only if the class sets `per_packet = True`
                                 (packet: one EVENT row, see contracts.wire)
    on_expire(session)           the session ends; set `session.extra = {...}` to add
                                 fields to its final record, `session.user_data` for context
One instance per worker process; it must not share state across workers.
"""
import importlib


class PluginError(Exception):
    pass


class _Adapter:
    """Gives every plugin all three hooks so the engine never checks."""

    def __init__(self, obj):
        self.obj = obj
        self.per_packet = bool(getattr(obj, "per_packet", False))
        for name in ("on_start", "on_packet", "on_expire"):
            setattr(self, name, getattr(obj, name, _nothing))


def _nothing(*_):
    return None


def resolve(spec: str):
    """Import `module:Class` (raises PluginError with a one-line reason)."""
    mod, sep, cls = spec.partition(":")
    if not sep or not mod or not cls:
        raise PluginError(f"--plugin {spec!r}: expected module:Class")
    try:
        m = importlib.import_module(mod)
    except Exception as e:  # any import failure is the user's plugin: say which
        raise PluginError(f"--plugin {spec!r}: cannot import {mod}: {e}") from None
    try:
        return getattr(m, cls)
    except AttributeError:
        raise PluginError(f"--plugin {spec!r}: {mod} has no {cls}") from None


def load(specs) -> list:
    return [_Adapter(resolve(s)()) for s in specs]
