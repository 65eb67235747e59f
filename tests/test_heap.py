"""pipeline.children.tune_heap: freed chunk-sized buffers stay in the heap, so the
next chunk does not fault its pages in again (glibc only)."""
import ctypes
import subprocess
import sys

import pytest

_CYCLE = """
import resource, sys
import numpy as np
sys.path.insert(0, {root!r})
from pipeline.children import tune_heap
if {tune}:
    assert tune_heap()
def cycle():
    arrays = [np.ones(4 << 20, np.uint8) for _ in range(12)]   # 48 MiB, as a chunk's temporaries
    del arrays
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(tune: bool) -> int:
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _CYCLE.format(root=root, tune=tune)],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


def _glibc() -> bool:
    try:
        ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's: other C libraries keep their own heap policy")
def test_freed_chunk_buffers_are_not_faulted_in_again():
    pages = 5 * (48 << 20) // 4096
    untuned, tuned = _faults(False), _faults(True)
    assert untuned > pages // 4          # glibc's default: the freed top is trimmed, each cycle faults anew
    assert tuned < pages // 20           # tuned: the heap keeps it
