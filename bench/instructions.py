#!/usr/bin/env python3
"""One worker's work counted in instructions: the comparison this VM does not blur.

On the 2-core VM, wall and process times of the same code swing by a third from
one quarter hour to the next; callgrind's instruction count does not move. This
feeds worker 0's share of the bench trace (as a `--workers 2` front-end splits
it, 65536-frame chunks) to an Engine and packs its records with msgpack as the
worker process does. It prints the records' count and digest (an optimisation
must keep the digest) and the process time; with `--callgrind` (valgrind
installed, not a project dependency) it runs the work under callgrind twice,
once without the engine, and prints the instructions of the work alone.

    .venv/bin/python bench/instructions.py [--trace T] [--callgrind] [--classify-packets N] [--max-sessions N]

The batches are made once per trace and kept in bench/out (a pickle of numpy
rows; delete it after changing the front-end): the front-end is outside the
count. Not a test: nothing asserts a figure.
"""
import argparse
import gc
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"
CHUNK_FRAMES = 65536            # `pipeline start`'s default --chunk-frames
RECORDS_PER_MESSAGE = 4096      # workers.process


def prepare(trace: Path, dest: Path) -> None:
    """Worker 0's batches of a two-worker front-end, with the payload bytes gathered."""
    from pipeline.frontend.core import FrontEnd
    from pipeline.frontend.readers import open_capture
    from contracts.timeouts import Timeouts
    fe = FrontEnd(2, Timeouts())
    batches = []
    for chunk in open_capture(str(trace)).chunks(CHUNK_FRAMES):
        ev, cuts, pay = fe.pack(fe.process(chunk))[0]
        batches.append((ev.copy(), cuts, bytes(pay) if pay is not None else None))
    paths = {v: k for k, v in fe.paths.ids.items()}
    with open(dest, "wb") as f:
        pickle.dump((batches, paths, fe.now), f, protocol=5)


def work(src: Path, run: bool = True, digest: bool = True, classify: int = 10, capacity: int = 0) -> None:
    """Load the batches; with `run`, feed them to an engine and pack the records (and,
    with `digest`, print what came out: outside the instruction count)."""
    import msgspec
    from workers.engine import Engine
    from workers.process import pack
    from contracts.timeouts import Timeouts
    with open(src, "rb") as f:
        batches, paths, end = pickle.load(f)
    if not run:
        return
    gc.freeze()             # as the worker process runs (contracts.children.CollectPacer): no automatic
    gc.disable()            # collection, which would walk the growing session table again and again
                            # (the pacer's own pass, every 100 messages, does not come in 16 batches)
    t = time.process_time()
    eng = Engine(0, Timeouts(), "bench", classify=classify, max_sessions=capacity)
    eng.add_paths(paths)
    out = []
    for ev, cuts, pay in batches:
        eng.feed_batch(ev, cuts, pay)
        recs = eng.take_records()
        for i in range(0, len(recs), RECORDS_PER_MESSAGE):
            pack(recs[i:i + RECORDS_PER_MESSAGE])
        out += recs
    eng.finish(end)
    recs = eng.take_records()
    pack(recs)
    out += recs
    spent = time.process_time() - t
    if not digest:
        return
    out.sort(key=lambda r: (r[3], r[7]))          # session id, report number
    digest = hashlib.sha1(b"\n".join(msgspec.json.encode(r) for r in out)).hexdigest()[:16]
    print(f"records {len(out)}  digest {digest}  process time {spent:.3f} s")


def callgrind(src: Path, classify: int = 10, capacity: int = 0) -> int:
    """Instructions of the work alone: a run with the engine less one without."""
    if shutil.which("valgrind") is None:
        raise SystemExit("instructions: --callgrind needs valgrind (Debian: apt-get install valgrind)")
    counts = []
    for mode in ("--work-only", "--load-only"):
        with tempfile.TemporaryDirectory() as tmp:
            p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                                sys.executable, __file__, mode, str(src), "--classify-packets", str(classify),
                                "--max-sessions", str(capacity)],
                               capture_output=True, text=True,
                               env=dict(os.environ, PYTHONHASHSEED="0",     # str hashes move the count ~3%
                                        OPENBLAS_NUM_THREADS="1"))  # its idle threads spin: counts moved ~0.5%
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode or not m:
            raise SystemExit(f"instructions: valgrind failed: {p.stderr.strip().splitlines()[-1:]}")
        counts.append(int(m.group(1)))
    return counts[0] - counts[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="capture (default: bench/out's synth trace of make bench)")
    ap.add_argument("--callgrind", action="store_true", help="count instructions (needs valgrind)")
    ap.add_argument("--classify-packets", type=int, default=10, metavar="N",
                    help="as `pipeline start`'s (0: no classification; default 10)")
    ap.add_argument("--max-sessions", type=int, default=0, metavar="N",
                    help="the engine's table capacity, as `pipeline start`'s (default 0: none)")
    ap.add_argument("--work-only", metavar="PICKLE", help=argparse.SUPPRESS)
    ap.add_argument("--load-only", metavar="PICKLE", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.work_only or a.load_only:
        work(Path(a.work_only or a.load_only), run=bool(a.work_only), digest=False, classify=a.classify_packets,
             capacity=a.max_sessions)
        return
    trace = Path(a.trace) if a.trace else OUT / "synth-1000000-20261127.pcap"
    if not trace.exists():
        raise SystemExit(f"instructions: {trace}: no such capture (make bench makes it)")
    src = OUT / f"worker0-{trace.stem}.pickle"
    if not src.exists() or src.stat().st_mtime < trace.stat().st_mtime:
        OUT.mkdir(parents=True, exist_ok=True)
        prepare(trace, src)
    work(src, classify=a.classify_packets, capacity=a.max_sessions)
    if a.callgrind:
        print(f"instructions {callgrind(src, a.classify_packets, a.max_sessions) / 1e9:.3f}G "
              f"(one worker's share of {trace.name})")


if __name__ == "__main__":
    main()
