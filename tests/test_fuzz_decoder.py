"""Fuzzing the front-end's decoder in-process: chunks of random and mutated frames go
straight to FrontEnd.process, through the fast path and, separately, with every
frame forced onto the slow path.

Why: a malformed frame must be counted (frames_malformed, or whatever class it
falls in), never raise. Per-frame decoding is fuzzed in test_slowpath.py; here
the whole front-end is: fast/slow split, fragment reassembly across frames,
tunnel parents, keying, segmentation. Properties, for every example:
  * no exception;
  * every frame lands in exactly one class: frames_read == n == the sum of
    frames_ip, frames_non_ip, frames_malformed, frames_unassembled (after finish);
  * the outermost rows carry frames_ip frames in all (sum of ncap at depth 0);
  * the fast path changes nothing: the same stats and rows with it and without.
A failing example is saved to tests/corpus/decoder/ (one file per kind of failure,
the last write being hypothesis's shrunk example); `test_corpus_replays` replays
every file there on every run.
"""
import os
import random
import re
import traceback
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline import tracegen
from pipeline.frontend import core
from pipeline.frontend.readers import Chunk
from tests import damage
from tests.test_slowpath import (LINKTYPE_CHOICES, eth, frag6, gtp, ipv4, ipv6, tcp, udp, udp4,
                                 valid_frames)
from contracts.timeouts import Timeouts

CORPUS_DIR = Path(__file__).resolve().parent / "corpus" / "decoder"
CLASSES = ("frames_ip", "frames_non_ip", "frames_malformed", "frames_unassembled", "frames_dropped")



def fragment_frames():
    """Datagrams in two fragments each: at the top, inside GTP-U (IPv4) and inside 6in4 (IPv6)."""
    seg = udp(4000, 53, bytes(range(40)))             # 48 bytes: fragments of 24 and 24
    seg6 = tcp(data=bytes(28))                        # 48 bytes
    top = [eth(0x0800, ipv4(17, seg[:24], ident=9, mf=True)), eth(0x0800, ipv4(17, seg[24:], ident=9, offset=24))]
    in_gtp = [udp4(2152, 2152, gtp(5, ipv4(17, seg[:24], ident=3, mf=True))),
              udp4(2152, 2152, gtp(5, ipv4(17, seg[24:], ident=3, offset=24)))]
    in_6in4 = [eth(0x0800, ipv4(41, ipv6(44, frag6(6, 0, True, 77) + seg6[:24]))),
               eth(0x0800, ipv4(41, ipv6(44, frag6(6, 24, False, 77) + seg6[24:])))]
    top6 = [eth(0x86DD, ipv6(44, frag6(17, 0, True, 5) + seg[:24])),
            eth(0x86DD, ipv6(44, frag6(17, 24, False, 5) + seg[24:]))]
    return [(1, f) for f in top + in_gtp + in_6in4 + top6]


# valid frames to mutate: every kind test_slowpath builds, fragmented datagrams, and a
# tracegen trace (VLAN, QinQ, IPv6, GTP-U, a fragmented datagram)
_TRACE = tracegen.build(seed=4, sessions=12)[0]
SEEDS = valid_frames() + fragment_frames() + [(1, f) for _, f in _TRACE]
FRAGMENTS = [(lt, b) for lt, b in SEEDS if any(n in ("ipv4_frag", "ipv6_frag") for n, _, _ in damage.fields(lt, b))]
SEED_TS = 1_700_000_000.0
# examples per run; a long hunt: PIPELINE_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz_decoder.py
EXAMPLES = int(os.environ.get("PIPELINE_FUZZ_EXAMPLES", "400"))


# -- chunks -----------------------------------------------------------------------------------
def make_chunk(frames, prefix=bytes(24)):
    """A Chunk as the readers make one: frame bytes at offsets inside one buffer (after a
    file header). frames: [(ts, wirelen, linktype, bytes)]."""
    data = bytearray(prefix)
    offs = []
    for _, _, _, b in frames:
        offs.append(len(data))
        data += b
    return Chunk(data=bytes(data), offsets=np.array(offs, np.int64),
                 caplen=np.array([len(f[3]) for f in frames], np.uint32),
                 wirelen=np.array([f[1] for f in frames], np.uint32),
                 ts=np.array([f[0] for f in frames], np.float64),
                 linktype=np.array([f[2] for f in frames], np.uint16))


def _all_slow(data, offsets, caplen, wirelen, ts, linktype, paths, base=0, teredo_any_port=True):
    from contracts.wire import EVENT
    return np.zeros(0, EVENT), np.ones(len(offsets), bool)


def run_frontend(chunks, fast=True, workers=1):
    """Feed chunks to a FrontEnd, then finish. Returns (front-end, rows with path names)."""
    fe = core.FrontEnd(workers, Timeouts(), frag_timeout=30.0)
    orig = core.decode_fast
    if not fast:
        core.decode_fast = _all_slow
    try:
        batches = [fe.process(make_chunk(c)) for c in chunks]
        batches.append(fe.finish())
    finally:
        core.decode_fast = orig
    names = {i: p for p, i in fe.paths.ids.items()}
    names[0] = ""
    rows = []
    for ev, ends, _nows, pay in batches:
        assert int(ends[-1]) == len(ev)
        if workers > 1:
            split = fe.pack((ev, ends, _nows, pay))
            assert sum(len(e) for e, _, _ in split) == len(ev)
            assert sum(len(p) for _, _, p in split) == int(ev["pllen"].sum())   # every kept byte to one worker
        for r in ev.tolist():
            rows.append(r)
    fields = core.EVENT.names
    pi = fields.index("path")
    # ploff/pllen say where the classification bytes travel, not what was decoded: left out
    cut = fields.index("ploff")
    rows = [tuple(r[:pi]) + (names[r[pi]],) + tuple(r[pi + 1:cut]) for r in rows]
    return fe, rows


def check(chunks):
    """The properties of the module docstring; saves the example when one fails."""
    try:
        n = sum(len(c) for c in chunks)
        fe, rows = run_frontend(chunks, fast=True, workers=3)
        st_ = fe.stats
        assert st_["frames_read"] == n, st_
        assert sum(st_[k] for k in CLASSES) == n, st_
        fidx = core.EVENT.names.index("fidx")
        depth = core.EVENT.names.index("depth")
        ncap = core.EVENT.names.index("ncap")
        assert all(1 <= r[fidx] <= n for r in rows)
        assert sum(r[ncap] for r in rows if r[depth] == 0) == st_["frames_ip"], st_
        fe2, rows2 = run_frontend(chunks, fast=False)
        assert fe2.stats == st_, (fe2.stats, st_)
        key = lambda r: (r[fidx], r[depth])
        assert sorted(rows2, key=key) == sorted(rows, key=key)
    except Exception as e:
        save_crasher(chunks, e)
        raise


def save_crasher(chunks, exc):
    """One corpus file per failure site (exception type and innermost frame in the project):
    hypothesis replays its shrunk example last, so that is what stays."""
    tb = [f for f in traceback.extract_tb(exc.__traceback__) if "/pipeline/" in f.filename]
    where = f"{Path(tb[-1].filename).stem}-{tb[-1].lineno}" if tb else "check"
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{type(exc).__name__}-{where}") + ".hex"
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    (CORPUS_DIR / name).write_text(dump(chunks, f"{type(exc).__name__}: {str(exc)[:200]}"))


def dump(chunks, comment=""):
    """Corpus format: '#' comments, one frame per line 'ts wirelen linktype hex', '--' between chunks."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for i, c in enumerate(chunks):
        if i:
            lines.append("--")
        lines += [f"{ts!r} {wire} {lt} {b.hex()}" for ts, wire, lt, b in c]
    return "\n".join(lines) + "\n"


def load(text):
    chunks, cur = [], []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "--":
            chunks.append(cur)
            cur = []
            continue
        ts, wire, lt, *hx = line.split()
        cur.append((float(ts), int(wire), int(lt), bytes.fromhex(hx[0] if hx else "")))
    chunks.append(cur)
    return chunks


# -- strategies -------------------------------------------------------------------------------
FOCI = sorted(damage.FOCUS)


@st.composite
def frame(draw):
    how = draw(st.sampled_from(("seed", "field", "field", "flip", "cut", "junk", "random")))
    if how == "random":
        lt = draw(st.sampled_from([x for x in LINKTYPE_CHOICES if 0 <= x < 65536]))
        b = draw(st.binary(max_size=120))
    else:
        lt, b = draw(st.sampled_from(SEEDS))
        r = random.Random(draw(st.integers(0, 2**32)))
        if how == "field":
            for _ in range(draw(st.integers(1, 3))):
                b, _ = damage.mutate_frame(r, lt, b, draw(st.sampled_from(FOCI)))
        elif how == "flip" and b:
            bb = bytearray(b)
            for _ in range(draw(st.integers(1, 4))):
                bb[r.randrange(len(bb))] ^= 1 << r.randrange(8)
            b = bytes(bb)
        elif how == "cut":
            b = b[:draw(st.integers(0, len(b)))]
        elif how == "junk":
            b = b + draw(st.binary(min_size=1, max_size=40))
    wire = draw(st.one_of(st.just(len(b)), st.integers(0, 2**32 - 1)))
    return lt, wire, b


@st.composite
def stream(draw):
    """Chunks of frames with times that mostly advance, sometimes jump (expiry) or go back."""
    frames = draw(st.lists(frame(), min_size=1, max_size=24))
    t, out = SEED_TS, []
    for lt, wire, b in frames:
        t += draw(st.sampled_from((0.0, 0.001, 0.5, 45.0, 400.0, -3.0)))
        out.append((t, wire, lt, b))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(out)), max_size=3))))
    chunks, last = [], 0
    for c in cuts + [len(out)]:
        if c > last:
            chunks.append(out[last:c])
            last = c
    return chunks


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream())
def test_fuzz_frontend(chunks):
    check(chunks)


@settings(max_examples=max(50, EXAMPLES // 3), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, 2**32), min_size=2, max_size=16))
def test_fuzz_fragments(picks):
    """Fragments (top level and in tunnels) with mutated offsets, flags and lengths, in any order."""
    chunk = []
    for i, s in enumerate(picks):
        lt, b = FRAGMENTS[s % len(FRAGMENTS)]
        b, _ = damage.mutate_frame(random.Random(s), lt, b, "fragments")
        chunk.append((SEED_TS + i * 0.01, len(b), lt, b))
    check([chunk])


def test_seed_frames_are_ip():
    """The seeds are sound: mutations start from frames that decode, and the fragments
    reassemble (top level and inside tunnels)."""
    fe, _ = run_frontend([[(SEED_TS + i, len(b), lt, b) for i, (lt, b) in enumerate(SEEDS)]])
    assert fe.stats["frames_malformed"] == 0 and fe.stats["frames_ip"] > len(SEEDS) * 0.9
    fe, rows = run_frontend([[(SEED_TS, len(b), lt, b) for lt, b in fragment_frames()]])
    assert fe.stats["frames_ip"] == 8 and not fe.extra, fe.extra
    # top: one row of 2 frames each; tunnels: one outer row per frame, one inner row of 2 frames
    assert sorted(r[core.EVENT.names.index("ncap")] for r in rows) == [1, 1, 1, 1, 2, 2, 2, 2]


def test_check_can_fail(tmp_path, monkeypatch):
    """A miscount is caught (and saved): the property is not vacuous."""
    monkeypatch.setattr("tests.test_fuzz_decoder.CORPUS_DIR", tmp_path)
    real = core.FrontEnd.finish

    def lossy(self):
        out = real(self)
        self.stats["frames_malformed"] += 1
        return out
    monkeypatch.setattr(core.FrontEnd, "finish", lossy)
    with pytest.raises(AssertionError):
        check([[(SEED_TS, 60, 1, SEEDS[0][1])]])
    saved = list(tmp_path.glob("*.hex"))
    assert len(saved) == 1 and load(saved[0].read_text())[0][0][3] == SEEDS[0][1]


CORPUS = sorted(CORPUS_DIR.glob("*.hex"))


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_replays(path):
    check(load(path.read_text()))
