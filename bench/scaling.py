#!/usr/bin/env python3
"""Throughput against front-end processes (K) and workers (N), offline and live, with the
sizing model's prediction beside each figure (pipeline/sizing.py, docs/operations.md).

    .venv/bin/python bench/scaling.py [TRACE] [--ks 1,2,3,4] [--ns 2,4,8,12] [--skip-live]

1. Stages, CPU microseconds on one core each (GC off, as in the processes): the reader's
   walk (r), a front-end's decoding and split by worker (d), its sequenced part (t), a
   worker per row (w; and in a run, derived from a K=1 run's CPU), the collector per
   record (c), records per frame (rho).
2. Start-up and tail (T0): wall and CPU of a run over a tiny trace.
3. Offline: `pipeline start --capture-procs K --workers N --read TRACE` for each K, N
   whose processes fit the cores (every pair where there are many): wall, CPU, frames/s
   end to end, the steady rate frames / (wall - T0), and the model's (with the costs
   measured in 1).
4. Live (root, iproute2 and netsniff-ng's trafgen): trafgen sends 8,192 UDP flows into
   one end of a veth pair at rising rates while `pipeline start --interface` captures
   the other end with K capture processes; each step reports what was sent, read and
   dropped, up to the first step with a drop or the first where trafgen (one CPU) falls
   short of the asked rate: the figure is then the generator's, and says so. Skipped, with
   the reason, where a tool or root is missing (tcpreplay, bench/live.py, tops out near
   130k frames/s).
5. CPU seconds of the whole run (K=1, N=2) against argus's on the same trace, where
   argus is installed, and each process's share (--stats-json `cpu`).
6. The model for this machine's cores and for 16, from the measured costs.
Writes bench/out/scaling.json. Nothing is asserted: the figures go to docs/benchmarks.md.
"""
import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402

from pipeline import sizing  # noqa: E402

CHUNK_FRAMES = bench.CHUNK_FRAMES
LIVE_RATES = (50_000, 100_000, 200_000, 400_000, 700_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000)
LIVE_SECONDS = 3
GENERATOR_SHORT = 0.9       # trafgen sent under 90% of the asked rate: higher steps would measure it, not us
TRAFGEN_FLOWS = """{
  eth(da=02:00:00:00:00:02, sa=02:00:00:00:00:01, type=0x0800),
  ipv4(saddr=10.0.0.1, daddr=10.1.0.1, ttl=64, proto=17, id=drnd()),
  udp(sport=dinc(1024, 9215), dport=dinc(5000, 5007)),
  fill(0x41, 32)
}
"""


def cpu() -> float:
    return time.process_time()


def stages(trace: Path, tmp: Path) -> dict:
    """Per-stage CPU costs (microseconds a frame; c: a record) measured in this process."""
    from contracts.timeouts import Timeouts
    from pipeline.frontend.core import FrontEnd
    from pipeline.frontend.readers import open_capture
    gc.collect()
    gc.freeze()
    gc.disable()
    fe = FrontEnd(2, Timeouts())
    chunks = open_capture(str(trace)).chunks(CHUNK_FRAMES)
    r = d = t = 0.0
    while True:
        a = cpu()
        chunk = next(chunks, None)
        if chunk is None:
            break
        base, now = fe.number(chunk)
        b = cpu()
        dec = fe.decode(chunk, base)
        c = cpu()
        batch = fe.sequence(dec, now)
        e = cpu()
        fe.pack(batch, gather=False)
        f = cpu()
        r, d, t = r + b - a, d + (c - b) + (f - e), t + e - c
    frames = fe.stats["frames_read"]
    _, batches, paths = bench.stage_frontend(trace, 1)
    rows = sum(len(ev) for ev, _, _ in batches)
    a = cpu()
    _, recs = bench.stage_worker(batches, paths)
    w = cpu() - a
    a = cpu()
    bench.stage_collector(recs, tmp, 0)      # 200,000 records (the run's, repeated)
    c = cpu() - a
    gc.enable()
    us = 1e6 / max(frames, 1)
    return {"frames": frames, "rows": rows, "records": len(recs), "r": r * us, "d": d * us, "t": t * us,
            "w": w * 1e6 / max(rows, 1), "c": c * 1e6 / 200000, "rho": len(recs) / max(frames, 1)}


def run_cpu(trace, K, N, tmp, *extra):
    """One end-to-end run: (wall s, CPU s of the whole process tree, --stats-json)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, st = bench.end_to_end(trace, N, tmp, "--capture-procs", str(K), *extra)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), st


def startup(tmp: Path, rounds: int = 3) -> tuple:
    """T0: wall and CPU of a whole run over a 20-session trace (start-up and tail)."""
    tiny = tmp / "tiny.pcap"
    subprocess.run([sys.executable, "-m", "pipeline.tracegen", str(tiny), "--sessions", "20"], cwd=ROOT,
                   check=True, capture_output=True)
    runs = [run_cpu(tiny, 1, 2, tmp)[:2] for _ in range(rounds)]
    return median(w for w, _ in runs), median(c for _, c in runs)


def grid(ks, ns, many):
    """The (K, N) pairs to run: all where the cores are many; on a few, each K with 2 workers
    (the processes then share the cores: the CPU per frame is the figure)."""
    return [(k, n) for k in ks for n in ns] if many else [(k, 2) for k in ks]


def argus_cpu(trace: Path, tmp: Path, rounds: int = 3):
    """CPU seconds (user + system) of `argus -r TRACE -w OUT`, the median of `rounds`; None
    without argus. argus is one process on one core: its CPU is its whole cost."""
    exe = shutil.which("argus")
    if not exe:
        return None
    runs = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([exe, "-r", str(trace), "-w", str(tmp / "argus.out")], check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        (tmp / "argus.out").unlink()
    return median(runs)


# -- live ------------------------------------------------------------------------------

def live_available() -> str:
    if os.geteuid() != 0:
        return "needs root (a network namespace and a veth pair)"
    for tool in ("ip", "trafgen"):
        if shutil.which(tool) is None:
            return f"needs {tool}" + (" (Debian package netsniff-ng)" if tool == "trafgen" else "")
    return ""


def live_step(ns, K, N, pps, tmp) -> dict:
    import live
    p, st = live.start_capture(ns, tmp, K, workers=N, ring_mb=64)
    n = pps * LIVE_SECONDS
    cfg = tmp / "flows.cfg"
    cfg.write_text(TRAFGEN_FLOWS)
    t = time.perf_counter()
    live.sh("trafgen", "-i", cfg, "-o", "vA", "-n", n, "-b", f"{pps}pps", "-P", "1", "-q", ns=ns, timeout=600)
    took = time.perf_counter() - t
    s = live.stop_capture(p, st)
    read = s["frames_read"] - s["frames_dropped"]
    return {"K": K, "N": N, "pps": pps, "sent": n, "achieved_pps": round(n / took), "read": read,
            "dropped": s["frames_dropped"], "ok": s["frames_dropped"] == 0 and read >= n}


def live_grid(ks, N, tmp) -> dict:
    import live
    why = live_available()
    if why:
        return {"skipped": why}
    out = {}
    with live.veth_pair(f"pscale{os.getpid()}", mtu=1500) as ns:
        for K in ks:
            best, rows, generator_bound = None, [], False
            for pps in LIVE_RATES:
                row = live_step(ns, K, N, pps, tmp)
                rows.append(row)
                print(f"  live K={K} N={N} {pps:>9,} pps: sent {row['sent']:,} at {row['achieved_pps']:,}/s, "
                      f"read {row['read']:,}, dropped {row['dropped']:,}", flush=True)
                if not row["ok"]:
                    break
                best = row["achieved_pps"]
                if row["achieved_pps"] < GENERATOR_SHORT * pps:
                    print(f"  live K={K}: trafgen sends no faster here; the figure is the generator's", flush=True)
                    generator_bound = True
                    break
            out[f"K{K}"] = {"max_pps_no_drop": best, "steps": rows, "generator_bound": generator_bound}
    return out


def model_table(p, cores) -> list:
    rows = []
    for K in (1, 2, 3, 4):
        for N in (2, 4, 8, 12):
            x, lim = sizing.throughput(K, N, cores, p=p)
            rows.append({"K": K, "N": N, "procs": sizing.processes(K, N), "fps": round(x), "limit": lim})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace", nargs="?", help="default: the bench trace (bench/run.py makes it)")
    ap.add_argument("--ks", default="1,2,3,4")
    ap.add_argument("--ns", default="2,4,8,12")
    ap.add_argument("--live-ks", default="1,2,3")
    ap.add_argument("--skip-live", action="store_true")
    ap.add_argument("--out", default=str(bench.OUT / "scaling.json"))
    a = ap.parse_args()
    bench.OUT.mkdir(parents=True, exist_ok=True)
    trace = Path(a.trace) if a.trace else bench.OUT / "synth-1000000-20261127.pcap"
    if not trace.exists():
        bench.make_trace(trace, 1_000_000, 20261127)
    trace.read_bytes()                  # into the page cache
    tmp = Path(tempfile.mkdtemp(prefix="scaling-"))
    cores = sizing.cores()
    many = cores >= 8
    res = {"cores": cores, "trace": str(trace)}

    s = stages(trace, tmp)
    t0_wall, t0_cpu = startup(tmp)
    w1, c1, st1 = run_cpu(trace, 1, 2, tmp)
    # a worker per row in a run (packing, sockets): the K=1 run's CPU less the other stages'
    f = s["r"] + s["d"] + s["t"]
    w_run = (c1 - t0_cpu - (f * s["frames"] + s["c"] * s["records"]) / 1e6) * 1e6 / max(s["rows"], 1)
    p = dict(sizing.COSTS, r=s["r"], d=s["d"], t=s["t"], w=max(w_run, s["w"]), c=s["c"], rho=s["rho"],
             f_live=f + 0.1)
    res.update(stages=s, w_in_run=w_run, t0_wall=t0_wall, t0_cpu=t0_cpu, costs=p)
    print(f"stages (CPU us a frame): reader r={s['r']:.2f}, decode+split d={s['d']:.2f}, sequenced t={s['t']:.2f}, "
          f"worker w={s['w']:.2f} a row ({w_run:.2f} in a run), collector c={s['c']:.2f} a record, "
          f"rho={s['rho']:.4f} records a frame")
    print(f"start-up and tail T0: {t0_wall:.2f} s wall, {t0_cpu:.2f} CPU-s (a 20-session trace)")
    print(f"\noffline, {s['frames']:,} frames, {cores} cores (model: measured costs, this machine's cores)")
    print(f"{'K':>2} {'N':>3} {'procs':>5} {'wall s':>7} {'CPU-s':>6} {'us/frame':>8} {'frames/s':>10} "
          f"{'steady/s':>10} {'model/s':>10}  limit")
    res["offline"] = []
    for K, N in grid([int(x) for x in a.ks.split(",")], [int(x) for x in a.ns.split(",")], many):
        wall, c, st = (w1, c1, st1) if (K, N) == (1, 2) else run_cpu(trace, K, N, tmp)
        x, lim = sizing.throughput(K, N, cores, p=p)
        fps, steady = st["frames_read"] / wall, st["frames_read"] / max(wall - t0_wall, 1e-3)
        res["offline"].append({"K": K, "N": N, "wall_s": round(wall, 3), "cpu_s": round(c, 3), "fps": round(fps),
                               "steady_fps": round(steady), "model_fps": round(x), "limit": lim})
        print(f"{K:>2} {N:>3} {sizing.processes(K, N):>5} {wall:>7.2f} {c:>6.2f} {1e6 * c / st['frames_read']:>8.2f} "
              f"{fps:>10,.0f} {steady:>10,.0f} {x:>10,.0f}  {lim}", flush=True)

    ar = argus_cpu(trace, tmp)
    res["argus_cpu_s"] = ar
    if ar is None:
        print("\nCPU against argus: argus is not installed here")
    else:
        print(f"\nCPU seconds for {s['frames']:,} frames: argus {ar:.2f}, the pipeline (K=1, N=2, every process) "
              f"{c1:.2f}: {c1 / ar:.2f}x")
        cp = st1["cpu"]          # each process's own figure (--stats-json `cpu`)
        ws = " + ".join(format(w["cpu_s"], ".2f") for w in cp["workers"])
        print(f"  the pipeline's processes: supervisor and front-end {cp['supervisor_s']:.2f}, workers {ws}, "
              f"collector {cp['collector_s']:.2f}; {cp['us_per_frame']:.2f} us a frame")
        res["pipeline_cpu"] = cp
    print("\nlive (trafgen, 8,192 UDP flows, veth pair)")
    if a.skip_live:
        res["live"] = {"skipped": "--skip-live"}
    else:
        ks = [k for k in (int(x) for x in a.live_ks.split(",")) if many or k <= 2]
        res["live"] = live_grid(ks, 2 if not many else sizing.choose(cores, live=True)[1], tmp)
    if "skipped" in res["live"]:
        print(f"  skipped: {res['live']['skipped']}")

    for C in sorted({cores, 16}):
        K, N = sizing.choose(C, p=p)
        x, lim = sizing.throughput(K, N, C, p=p)
        print(f"\nmodel, {C} cores (measured costs): auto picks K={K}, N={N}: {x:,.0f} frames/s steady ({lim}), "
              f"{s['frames'] / (t0_wall + s['frames'] / x):,.0f} end to end on this trace")
        res[f"model_{C}"] = {"auto": [K, N], "table": model_table(p, C)}
        for row in res[f"model_{C}"]["table"]:
            print(f"  K={row['K']} N={row['N']:>2} ({row['procs']:>2} processes): {row['fps']:>10,} ({row['limit']})")
    shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
