"""Classification glue: a worker's payload rows to their sessions' Inspectors.

The front-end ships the first payload bytes of young sessions' rows (EVENT
ploff/pllen, docs/classification.md); the engine hands them here after a
batch's counters, so its hot loops pay nothing for classification. A session's
`insp` is None before its first payload, then its `classify.Inspector`, then
the Inspector's result (a dict) once it is done, or False when it has nothing
to inspect (not TCP or UDP). A session whose inspection is over is skipped at
once.

Paths, as the engine's:
- per packet: `inspect` takes the rows in frame order (`inspect_rows`);
- batch: `inspect_groups` takes the bulk groups' payload rows in rounds, a
  session's k-th payload row in round k, only while the session is still being
  classified. Sessions are independent, and no advance of the batch can end a
  bulk session before its last row there, so this order gives what frame order
  gives; most sessions are decided by their first payload, and their later rows
  then cost nothing.
Both first try `refuse_first`: a session whose first payload every candidate
protocol refuses gets the result its Inspector would have come to without one.

`class_of` is a session's classification when its record is written: its
inspection's result, else its port's guess.
"""
import numpy as np

from contracts.wire import take_rows

from . import classify
from .rounds import ranks, rounds

Inspector = classify.Inspector      # module attribute: tests count the ones made
_port_class = classify.registry.port_class
_class_keys = classify.registry.class_keys
_MIN_DISPATCH = classify.registry.MIN_DISPATCH
_COLUMNS = ("dir", "ploff", "pllen", "proto", "sport", "dport")
_SLICE = 4096


def inspect(table, ev, payload, rows, budget: int, refuse_min: int) -> None:
    """The per-packet path's classification: the rows of `ev` that carry payload bytes
    (`rows`: the indexes of the rows to look at, None: all; frame order), each given to
    its session in `table`."""
    if rows is None:
        idx = np.flatnonzero(ev["pllen"])
    else:
        idx = rows[ev["pllen"][rows] != 0]
    get = table.get
    inspect_rows(ev, payload, idx, [get(k) for k in ev["key"][idx].tolist()], budget, refuse_min)


def inspect_groups(ev, payload, order, gs, plrows, look, ng: int, budget: int, refuse_min: int) -> None:
    """The batch path's classification, for the bulk groups in `look` ((group, session)
    pairs: sessions still being classified), in rounds (the module's docstring). `order`,
    `gs`: the batch's rows in grouped order and each one's group; `plrows`: the rows with
    payload bytes (frame order); `ng`: the number of groups."""
    live = np.zeros(ng, bool)
    sess = dict(look)
    live[list(sess)] = True
    sel = plrows[order]
    sel &= live[gs]
    pos = np.flatnonzero(sel)
    if not len(pos):
        return
    rows, gp = order[pos], gs[pos]                 # grouped, frame order inside a group
    for part in rounds(ranks(gp)[0], len(pos)):
        part = part[live[gp[part]]]
        if not len(part):
            break                                   # no live group has a later row either
        gk = gp[part]
        ss = list(map(sess.__getitem__, gk.tolist()))
        inspect_rows(ev, payload, rows[part], ss, budget, refuse_min)
        live[gk] = [s.insp.__class__ is Inspector for s in ss]     # still inspecting


def inspect_rows(ev, payload, idx, sessions, budget: int, refuse_min: int) -> None:
    """Rows `idx` of `ev` to their `sessions` (one per row, None: no session), in order;
    `budget`: payload packets an Inspector looks at per direction. `_SLICE` rows at a
    time: the refusals' numpy columns (~200 bytes a row) and the rows' Python columns
    while they live, for a flood's tens of thousands of first payloads in one batch."""
    for lo in range(0, len(idx), _SLICE):
        _inspect_slice(ev, payload, idx[lo:lo + _SLICE], sessions[lo:lo + _SLICE], budget, refuse_min)


def _inspect_slice(ev, payload, idx, sessions, budget: int, refuse_min: int) -> None:
    raw = payload                      # bytes, or a view of the capture file: slices are copied
    if refuse_first(ev, raw, idx, sessions, refuse_min):      # some sessions decided: the rest only
        todo = [j for j, s in enumerate(sessions)
                if s is not None and (s.insp is None or s.insp.__class__ is Inspector)]
        idx, sessions = idx[todo], [sessions[j] for j in todo]
    cols = [ev[c][idx].tolist() for c in _COLUMNS]
    for s, d, o, n, proto, sp, dp in zip(sessions, *cols):
        if s is None:
            continue
        ins = s.insp
        if ins is not None and ins.__class__ is not Inspector:
            continue                            # done (its result) or nothing to inspect (False)
        fc = d == s.client_dir                  # this row's sender is the client
        if ins is None:
            if proto != 6 and proto != 17:
                s.insp = False
                continue
            cport, sport = (sp, dp) if fc else (dp, sp)
            ins = s.insp = Inspector(proto, cport, sport, budget)
        want = ins.wants(fc)
        if want and ins.feed(bytes(raw[o:o + min(want, n)]), fc):
            s.insp = ins.result()               # the result replaces the inspector


def refuse_first(ev, raw, idx, sessions, refuse_min: int) -> bool:
    """The refusals' shortcut, over numpy columns: a TCP or UDP session of `sessions`
    without an inspector yet (its first row here, in row order, is its first payload:
    `idx` holds its rows' indexes, the per-packet path possibly several) whose first
    payload every protocol it would be shown refuses (classify.refusals, and its port
    class's `refusable` bits) gets at once the result its Inspector would have come
    to (classify.unmatched). Python runs once per distinct (port class, first byte,
    direction), not once per session. Fewer than `refuse_min` such sessions: each
    one's Inspector decides. Returns whether it decided any."""
    fresh = [j for j, s in enumerate(sessions) if s is not None and s.insp is None]
    if len(fresh) < refuse_min:
        return False
    fresh = np.asarray(fresh, np.intp)
    r = take_rows(ev, idx[fresh])
    _, first = np.unique(r["key"], return_index=True)    # each session's first row (one key, one session)
    if len(first) < len(fresh):
        first.sort()
        fresh, r = fresh[first], r[first]
    proto = r["proto"]
    ported = (proto == 6) | (proto == 17)
    if not ported.all():
        fresh, r, proto = fresh[ported], r[ported], proto[ported]
    if not len(fresh):
        return False
    ss = [sessions[j] for j in fresh.tolist()]
    fc = r["dir"] == np.fromiter([s.client_dir for s in ss], np.uint8, len(ss))
    sp, dp = r["sport"], r["dport"]
    cport, sport = np.where(fc, sp, dp), np.where(fc, dp, sp)
    no = classify.refusals(raw, r["ploff"], r["pllen"], fc, proto, cport, sport)
    some = np.flatnonzero(no)
    if not len(some):
        return False
    no, fc, proto, cport, sport = no[some], fc[some], proto[some], cport[some], sport[some]
    ploff, pllen = r["ploff"][some].astype(np.int64), r["pllen"][some]
    b = np.full(len(some), 256, np.int64)               # the first byte; 256: too short to dispatch on
    long = pllen >= _MIN_DISPATCH
    b[long] = np.frombuffer(raw, np.uint8)[ploff[long]]
    combo = ((_class_keys(proto, cport, sport) << 9 | b) << 1) | fc     # port class, first byte, direction
    _, rep, inv = np.unique(combo, return_index=True, return_inverse=True)
    need_u = np.empty(len(rep), np.int64)
    res_u = []
    for k, (j, pr, cp, svp, bj, f) in enumerate(zip(rep.tolist(), proto[rep].tolist(), cport[rep].tolist(),
                                                    sport[rep].tolist(), b[rep].tolist(), fc[rep].tolist())):
        pc = _port_class(pr, cp, svp)
        need_u[k] = need = pc.refusable(None if bj == 256 else bj, f)
        res_u.append(classify.unmatched(pc) if need > 0 else None)
    need = need_u[inv]
    done = np.flatnonzero((need > 0) & ((no & need) == need))
    if not len(done):
        return False
    for j, k in zip(some[done].tolist(), inv[done].tolist()):
        ss[j].insp = res_u[k]
    return True


def class_of(s, proto, cport, sport) -> dict:
    """The session's classification: its inspection's result, else its port's guess."""
    ins = s.insp
    if ins.__class__ is dict:
        return ins
    if ins:
        return ins.result()
    if proto in classify.NOPORT:
        return classify.classify_noport(proto)
    return classify.guess_by_port(proto, cport, sport)
