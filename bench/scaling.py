#!/usr/bin/env python3
"""Throughput against the number of workers, and the per-stage model behind it.

    python3 bench/scaling.py TRACE [--workers 1,2,4,8,12,15] [--out results.json]

Runs `pipeline start --workers W` end to end for each W (wall time, start-up
included), measures each stage on one core (front-end, one worker, collector),
and prints the model's prediction next to each measurement:
    predicted(W) = min(front-end, W x worker, collector / records-per-frame)
with one core per process (the front-end and the collector take one each,
so W workers need W + 2 cores).
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--workers", default="1,2,4,8,12,15")
    ap.add_argument("--out")
    a = ap.parse_args()
    trace = Path(a.trace)
    trace.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="scaling-"))
    fe_fps, batches, paths = bench.stage_frontend(trace, 1)
    w_fps, recs = bench.stage_worker(batches, paths)
    c_rps = bench.stage_collector(recs, tmp)
    frames = sum(len(e) for e, _, _ in batches)
    rec_per_frame = len(recs) / max(1, frames)
    res = {"cores": os.cpu_count(), "trace": str(trace), "frontend_fps": round(fe_fps), "worker_fps": round(w_fps),
           "collector_rps": round(c_rps), "records_per_frame": round(rec_per_frame, 4), "runs": []}
    print(f"stages: front-end {fe_fps:,.0f} frames/s, worker {w_fps:,.0f} frames/s, "
          f"collector {c_rps:,.0f} records/s ({rec_per_frame:.3f} records per frame)")
    print(f"{'workers':>7} {'wall s':>8} {'frames/s':>10} {'model':>10}")
    for w in [int(x) for x in a.workers.split(",")]:
        wall, st = bench.end_to_end(trace, w, tmp)
        fps = st["frames_read"] / wall
        model = min(fe_fps, w * w_fps, c_rps / max(rec_per_frame, 1e-9))
        res["runs"].append({"workers": w, "wall_s": round(wall, 3), "fps": round(fps), "model_fps": round(model)})
        print(f"{w:>7} {wall:>8.2f} {fps:>10,.0f} {model:>10,.0f}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
