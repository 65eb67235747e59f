"""contracts.children.tune_heap: freed chunk-sized buffers stay in the heap, so the
next chunk does not fault its pages in again (glibc only)."""
import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.children import tune_heap

_CYCLE = """
import resource, sys
sys.path.insert(0, {root!r})
from contracts.children import tune_heap
if {tune}:
    assert tune_heap()
def cycle():
    blocks = [bytearray(4 << 20) for _ in range(12)]   # 48 MiB, as a chunk's temporaries
    del blocks
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _clean_env() -> dict:
    """The environment without malloc settings of its own (they would change glibc's policy)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}


def _faults(tune: bool) -> int:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _CYCLE.format(root=root, tune=tune)],
                         capture_output=True, text=True, check=True, env=_clean_env())
    return int(out.stdout)


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's: other C libraries keep their own heap policy")
def test_freed_chunk_buffers_are_not_faulted_in_again():
    untuned, tuned = _faults(False), _faults(True)
    assert untuned > 5 * (4 << 20) // 4096      # glibc's default: the freed top is trimmed, cycles fault anew
    assert tuned * 10 < untuned                 # tuned: the heap keeps it


def test_a_users_malloc_settings_win(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert tune_heap() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert tune_heap() is False
