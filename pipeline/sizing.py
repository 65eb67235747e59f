"""`--workers auto` and `--capture-procs auto`: K front-end processes and N workers from the
cores, by a model of the run as a pipeline of processes (docs/operations.md, "Sizing").

Each process uses one core at most, so a run goes at the pace of its slowest stage,
or of the cores when its processes outnumber them:

    K = 1:   X = min(1/f,                              N/w, 1/(c rho), C_eff/total)
    K >= 2:  X = min(1/(r+s), K/(d+t+s), 1/(t+hop),    N/w, 1/(c rho), C_eff/total)
    live:    X = min(K/f_live,                         N/w, 1/(c rho), C_eff/total)

r: the reader's walk of the file, d: a front-end's parallel decoding, t: its sequenced
part (one chunk at a time), s: a chunk's columns to a front-end process, f = r + d + t
(one process does it all), w: a worker per row, c: the collector per record, rho:
records per frame; C_eff = ETA x min(C, processes), total: the CPU of one frame through
every stage. The costs are CPU microseconds measured on the project's 2-core VM on the
bench trace (docs/benchmarks.md, bench/scaling.py measures them anywhere); only their
ratios decide K and N. No load is sampled: a busy machine is the operator's to say
with --cpus.
"""
import os

COSTS = {"r": 0.35, "d": 0.50, "t": 0.13, "s": 0.01, "hop": 0.001, "f_live": 1.10,
         "w": 1.95, "c": 4.0, "rho": 0.0615}
ETA = 0.9                   # what of a core a process gets when they share them
HEADROOM = 1.25             # workers' capacity over the front-ends' pace (offline: a shortfall is a delay)
HEADROOM_LIVE = 1.5         # live: a shortfall is a drop, and fanout hashes flows, not frames
NEAR_BEST = 0.98            # K: the fewest front-end processes within 2% of the best
MAX_CAPTURE_PROCS = 16      # session ids and proto_path ids have room for 16 front-end processes


def cores(cpus=None) -> int:
    """The cores the run may use: --cpus, else this process's affinity."""
    if cpus:
        return len(cpus)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def processes(K: int, N: int, live: bool = False) -> int:
    """A run's busy processes: front-end(s) (with a reader when K >= 2 offline), workers, collector."""
    return (K if live or K == 1 else 1 + K) + N + 1


def ceilings(K: int, N: int, C: int, live: bool = False, p=None) -> dict:
    """Frames a second each stage could take (one core each), and the cores' own ceiling."""
    p = p or COSTS
    r, d, t, s, w, c, rho = p["r"], p["d"], p["t"], p["s"], p["w"], p["c"], p["rho"]
    out = {}
    if live:
        out["capture"] = K * 1e6 / p["f_live"]
        total = p["f_live"] + w + c * rho
    elif K == 1:
        out["front-end"] = 1e6 / (r + d + t)
        total = r + d + t + w + c * rho
    else:
        out["reader"] = 1e6 / (r + s)
        out["decoders"] = K * 1e6 / (d + t + s)
        out["sequenced"] = 1e6 / (t + p["hop"])
        total = r + d + t + 2 * s + w + c * rho
    out["workers"] = N * 1e6 / w
    out["collector"] = 1e6 / (c * rho)
    out["cores"] = min(C, processes(K, N, live)) * ETA * 1e6 / total
    return out


def throughput(K: int, N: int, C: int, live: bool = False, p=None):
    """(frames a second, the stage that limits it)."""
    cs = ceilings(K, N, C, live, p)
    lim = min(cs, key=cs.get)
    return cs[lim], lim


def choose(C: int, live: bool = False, K=None, N=None, p=None):
    """(K, N) for C cores; a given K or N stays as given. K: the fewest front-end processes
    within 2% of the best throughput any split of the cores gives; N: the fewest workers
    with HEADROOM over that pace, at most what the cores leave. On 2-4 cores the
    processes share them (room for 4: today's one front-end and two workers)."""
    room = max(C, 4)
    Ks = [K] if K else range(1, MAX_CAPTURE_PROCS + 1)
    Ns = [N] if N else range(1, room)
    cands = [(throughput(k, n, C, live, p)[0], k, n) for k in Ks for n in Ns
             if processes(k, n, live) <= room or (K and N)]
    if not cands:                       # the given K or N alone fills the cores: the fewest of the other
        cands = [(throughput(k, n, C, live, p)[0], k, n) for k in Ks[:1] for n in Ns[:1]]
    best = max(x for x, _, _ in cands)
    k = min(k for x, k, _ in cands if x >= NEAR_BEST * best)
    mine = sorted((n, x) for x, kk, n in cands if kk == k)
    pace = max(x for _, x in mine)
    w = (p or COSTS)["w"]
    need = (HEADROOM_LIVE if live else HEADROOM) * pace
    n = next((n for n, _ in mine if n * 1e6 / w >= need), mine[-1][0])
    return k, n
