"""Where ../shared is, and a skip marker for tests that need it."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PCAPS = SHARED / "pcaps"
needs_shared = pytest.mark.skipif(not PCAPS.is_dir(), reason="../shared/pcaps is absent (fresh clone elsewhere)")


def all_captures():
    if not PCAPS.is_dir():
        return []
    return sorted(p for p in PCAPS.glob("*/*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap"))


def capture_ids(paths):
    return [f"{p.parent.name}/{p.name}" for p in paths]
