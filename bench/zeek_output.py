"""Records per second into the zeek output (TSV and JSON) beside JSON lines, one core.

The records are a real run's (pipeline start on a generated trace, interim reports
included), copied to 200,000 with distinct session ids, written in the collector's
slices of 4096 with automatic garbage collection off, as the collector runs
(contracts.children.CollectPacer). Best of 3; CPU time as well as wall time, since
a shared VM's wall clock says as much about the neighbours as about the code.

    .venv/bin/python bench/zeek_output.py [--records 200000]
"""
import argparse
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.outputs.jsonl import JsonLines          # noqa: E402
from collector.outputs.zeek import ZeekLogs            # noqa: E402
from contracts.record import INDEX, NAMES              # noqa: E402


def records(tmp: Path, n: int) -> list:
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(tmp / "t.pcap"), "--sessions", "3000"],
                   check=True, capture_output=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "pipeline.cli", "start", "--workers", "2", "--read", str(tmp / "t.pcap"),
                    "--active-timeout", "60", "--quiet", "--output", f"jsonl:{tmp / 's.jsonl'}"],
                   check=True, capture_output=True, cwd=ROOT)
    native = [json.loads(line) for line in (tmp / "s.jsonl").read_text().splitlines()]
    wire = []
    for d in native:
        extra = {k: v for k, v in d.items() if k not in INDEX}
        wire.append([d[k] for k in NAMES] + ([extra] if extra else []))
    sid = INDEX["session_id"]
    out = []
    for i in range(n):
        r = list(wire[i % len(wire)])
        r[sid] = r[sid] + (i // len(wire) << 40)        # another session each round
        out.append(r)
    return out


def once(make, recs) -> tuple:
    o = make()
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(recs), 4096):
        o.write(recs[i:i + 4096])
    o.close()
    return time.perf_counter() - t, time.process_time() - c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200000)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zeekbench-"))
    try:
        recs = records(tmp, a.records)
        interim = sum(1 for r in recs if not r[INDEX["final"]])
        print(f"{len(recs)} records ({interim} interim)")
        gc.collect()
        gc.freeze()
        gc.disable()
        outputs = {"jsonl": lambda: JsonLines(str(tmp / "o.jsonl")),
                   "zeek tsv": lambda: ZeekLogs(str(tmp / "z")),
                   "zeek json": lambda: ZeekLogs(f"{tmp / 'zj'}?format=json")}
        for name, make in outputs.items():
            runs = [once(make, recs) for _ in range(3)]
            wall, cpu = min(w for w, _ in runs), min(c for _, c in runs)
            print(f"{name:10s} {len(recs) / wall:>9,.0f} records/s wall  {len(recs) / cpu:>9,.0f} records/s CPU")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
