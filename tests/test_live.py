"""Live capture (pipeline/frontend/live.py, bpf.py) on real interfaces: a veth pair in a
throw-away network namespace, a generated trace replayed into one end by tcpreplay and
captured on the other by a capture process inside the namespace. Expectations come from
the trace file itself (read here with a few lines of struct, not the project's readers)
and from tcpreplay's own count. Needs root (network namespaces, CAP_NET_RAW), iproute2
and tcpreplay; skips with the reason otherwise."""
import collections
import itertools
import json
import os
import pickle
import pwd
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.frontend.bpf import compile_filter
from pipeline.frontend.core import FrontEnd
from pipeline.frontend.readers import open_capture
from contracts.timeouts import Timeouts
from pipeline.frontend.live import CaptureError, LiveCapture, drop_privileges

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NOT_ROOT = "capturing on lo needs CAP_NET_RAW (run as root or grant the capability)"

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AF_PACKET capture is Linux only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="live capture tests need root (network namespaces, CAP_NET_RAW)"),
]

# The capture side, run inside the namespace: opens the captures, says "ready", reads the
# number of frames to wait for from stdin, and pickles what it saw to stdout. It stops once
# that many frames arrived AND an idle timeout (an empty chunk) came after them, so extra
# frames would be seen too; or after 3 s without frames; or after 20 s in all.
CAPTURE = r'''
import json, os, pickle, sys, threading, time
from pipeline.frontend.live import CaptureError, LiveCapture, drop_privileges
from pipeline.frontend.core import FrontEnd      # everything imported before privileges go
from contracts.timeouts import Timeouts
cfg = json.loads(sys.argv[1])
caps = [LiveCapture(cfg["ifaces"], ring_mb=4, bpf=cfg.get("bpf"), fanout_group=cfg.get("fanout"))
        for _ in range(cfg.get("captures", 1))]
def promisc():
    return {n: bool(int(open(f"/sys/class/net/{n}/flags").read(), 16) & 0x100) for n in cfg["ifaces"]}
promisc_open = promisc()
dropped_to, reopen = None, None
if cfg.get("drop"):
    drop_privileges(cfg["drop"])
    dropped_to = (os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
    try:
        LiveCapture(cfg["ifaces"]).close()
        reopen = "opened"
    except CaptureError as e:
        reopen = str(e)
sys.stdout.write("ready\n")
sys.stdout.flush()
state = {"target": None, "given": None, "last": time.monotonic(), "total": 0, "deadline": False}
lock = threading.Lock()
start = time.monotonic()

def read_target():
    line = sys.stdin.readline()
    state["target"] = int(line) if line.strip() else 0
    state["given"] = time.monotonic()

threading.Thread(target=read_target, daemon=True).start()
frames = [[] for _ in caps]
fes, keys = [], [[] for _ in caps]
if cfg.get("frontend"):                   # the front-end takes live chunks as they come
    fes = [FrontEnd(2, Timeouts()) for _ in caps]
empties = [0] * len(caps)
quiet = [False] * len(caps)
chunk_ts = [[] for _ in caps]

def stop(i):
    now = time.monotonic()
    if now - start > 20:
        state["deadline"] = True
        return True
    if state["target"] is None:
        return False
    return quiet[i] or (now - max(state["last"], state["given"]) > 3)

def run(i):
    for ch in caps[i].chunks(lambda: stop(i)):
        if fes:
            keys[i] += fes[i].process(ch)[0]["key"].tolist()
        if not len(ch):
            empties[i] += 1
            if state["target"] is not None and state["total"] >= state["target"]:
                quiet[i] = True
            continue
        assert ch.offsets.dtype.kind == "i" and ch.caplen.dtype.name == "uint32"
        assert ch.wirelen.dtype.name == "uint32" and ch.ts.dtype.name == "float64"
        assert ch.linktype.dtype.name == "uint16"
        for o, c, w, t, l in zip(ch.offsets.tolist(), ch.caplen.tolist(), ch.wirelen.tolist(),
                                 ch.ts.tolist(), ch.linktype.tolist()):
            frames[i].append((bytes(ch.data[o:o + c]), w, t, l))
        chunk_ts[i].append((float(ch.ts.min()), float(ch.ts.max())))
        caps[i].stats()          # the kernel resets its counters on each read: stats() must add up
        with lock:
            state["total"] += len(ch)
            state["last"] = time.monotonic()

threads = [threading.Thread(target=run, args=(i,)) for i in range(len(caps))]
for t in threads:
    t.start()
for t in threads:
    t.join()
stats = [c.stats() for c in caps]
linktypes = [c.linktypes for c in caps]
for c in caps:
    c.close()
promisc_closed = promisc()
for i, fe in enumerate(fes):
    keys[i] += fe.finish()[0]["key"].tolist()
sys.stdout.buffer.write(pickle.dumps({"frames": frames, "stats": stats, "empties": empties,
                                      "deadline": state["deadline"], "linktypes": linktypes,
                                      "dropped_to": dropped_to, "reopen": reopen,
                                      "promisc": (promisc_open, promisc_closed),
                                      "fe_stats": [fe.stats for fe in fes], "keys": keys}))
'''


# -- the trace, read independently --------------------------------------------------
def pcap_frames(path) -> list[bytes]:
    b = Path(path).read_bytes()
    order = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",
             b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}[b[:4]]
    pos, out = 24, []
    while pos + 16 <= len(b):
        _s, _f, cap, _w = struct.unpack_from(order + "IIII", b, pos)
        out.append(b[pos + 16:pos + 16 + cap])
        pos += 16 + cap
    assert pos == len(b)
    return out


def dissect(f: bytes) -> dict:
    """VLAN depth, and for IP: protocol, addresses, ports, fragment facts, IPv4 payload."""
    d = {"vlans": 0, "ip": None}
    pos, et = 12, struct.unpack_from("!H", f, 12)[0]
    while et in (0x8100, 0x88A8):
        d["vlans"] += 1
        pos += 4
        et = struct.unpack_from("!H", f, pos)[0]
    l3 = pos + 2
    if et == 0x0800:
        ihl = (f[l3] & 15) * 4
        tot, ident, frag = struct.unpack_from("!HHH", f, l3 + 2)
        proto = f[l3 + 9]
        d.update(ip=4, proto=proto, src=f[l3 + 12:l3 + 16], dst=f[l3 + 16:l3 + 20], id=ident,
                 offset=(frag & 0x1FFF) * 8, more=bool(frag & 0x2000), hdr=f[l3:l3 + ihl],
                 payload=f[l3 + ihl:l3 + tot])
        l4 = l3 + ihl if not frag & 0x1FFF else None
    elif et == 0x86DD:
        proto = f[l3 + 6]
        l4 = l3 + 40
        if proto == 44:                    # fragment header
            proto, l4 = f[l4], (l4 + 8 if not struct.unpack_from("!H", f, l4 + 2)[0] & 0xFFF8 else None)
        d.update(ip=6, proto=proto, src=f[l3 + 8:l3 + 24], dst=f[l3 + 24:l3 + 40], offset=0, more=False)
    else:
        return d
    d["ports"] = struct.unpack_from("!HH", f, l4) if l4 is not None and proto in (6, 17) else (0, 0)
    return d


def flow(d: dict):
    """Both directions of a 5-tuple as one key."""
    a, b = (d["src"], d["ports"][0]), (d["dst"], d["ports"][1])
    return (d["proto"],) + tuple(sorted([a, b]))


def fragmented(d: dict) -> bool:
    return d["ip"] == 4 and (d["more"] or d["offset"] > 0)


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    out = tmp_path_factory.mktemp("live")
    pcap, truth = out / "t.pcap", out / "truth.json"
    subprocess.run([PY, "-m", "pipeline.tracegen", str(pcap), "--sessions", "100", "--truth", str(truth)],
                   cwd=ROOT, check=True, capture_output=True, timeout=60)
    return pcap, pcap_frames(pcap)


# -- the namespace --------------------------------------------------------------------
def sh(*cmd, ns=None, check=True, timeout=20):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(full)} failed: {r.stderr.strip()}")
    return r


_names = itertools.count()


@pytest.fixture
def netns():
    if shutil.which("ip") is None:
        pytest.skip("ip not installed (Debian iproute2)")
    ns = f"plive{os.getpid()}x{next(_names)}"
    r = sh("ip", "netns", "add", ns, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {r.stderr.strip()}")
    try:
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "add", "vA", "type", "veth", "peer", "name", "vB", ns=ns)
        for dev in ("vA", "vB"):
            sh("sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1", ns=ns)
            sh("ip", "link", "set", dev, "mtu", "9000", "up", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        yield ns
    finally:
        sh("ip", "netns", "del", ns, check=False)


def replay(pcap):
    def go(ns):
        if shutil.which("tcpreplay") is None:
            pytest.skip("tcpreplay not installed (Debian tcpreplay)")
        r = sh("tcpreplay", "-i", "vA", "--pps", "30000", str(pcap), ns=ns, timeout=60)
        sent = int(re.search(r"Successful packets:\s+(\d+)", r.stdout).group(1))
        assert int(re.search(r"Failed packets:\s+(\d+)", r.stdout).group(1)) == 0
        return sent
    return go


def capture(ns, cfg, send, target=lambda sent: sent):
    """Start the capture side in ns, run send(ns) -> what was sent, tell the capture
    side how many frames to wait for, and return (sent, what it saw)."""
    if shutil.which("tcpreplay") is None:
        pytest.skip("tcpreplay not installed (Debian tcpreplay)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c", CAPTURE, json.dumps(cfg)], cwd=ROOT, env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready = p.stdout.readline()
        if ready != b"ready\n":
            p.kill()
            raise AssertionError(f"capture side did not start: {p.communicate()[1].decode()[-2000:]}")
        sent = send(ns)
        p.stdin.write(f"{target(sent)}\n".encode())
        p.stdin.flush()
        out, err = p.communicate(timeout=40)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err.decode()[-2000:]
    seen = pickle.loads(out)
    assert not seen["deadline"], "capture side ran into its 20 s deadline"
    return sent, seen


# -- tests ------------------------------------------------------------------------------
def test_replayed_trace_is_captured_frame_for_frame(netns, trace):
    """Every frame tcpreplay sent arrives once, byte-identical and in order (VLAN tags, which
    the kernel strips on receive, put back), with rising timestamps and no drops; the capture
    keeps working after dropping privileges to nobody, which can no longer open one."""
    pcap, expected = trace
    sent, seen = capture(netns, {"ifaces": ["vB"], "drop": "nobody", "frontend": True}, replay(pcap))
    got = seen["frames"][0]
    assert sent == len(expected)
    assert len(got) == sent
    assert sum(1 for f in expected if dissect(f)["vlans"]) > 0          # the tag put-back is exercised
    for i, (want, (data, wirelen, _ts, linktype)) in enumerate(zip(expected, got)):
        assert data == want, f"frame {i + 1} differs"
        assert wirelen == len(want) and linktype == 1
    ts = [t for _d, _w, t, _l in got]
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert seen["stats"] == [{"received": sent, "dropped": 0}]
    assert seen["empties"][0] >= 1                                      # idle links yield empty chunks
    assert seen["promisc"] == ({"vB": True}, {"vB": False})             # promiscuous while capturing
    nobody = pwd.getpwnam("nobody")
    assert seen["dropped_to"] == (nobody.pw_uid, nobody.pw_uid, nobody.pw_gid, [])
    assert seen["reopen"] == "capturing on vB needs CAP_NET_RAW (run as root or grant the capability)"
    # the front-end decodes the live chunks as it decodes the file's: same counts, same keys
    fe = FrontEnd(2, Timeouts())
    with open_capture(pcap) as reader:
        keys = [k for ch in reader.chunks() for k in fe.process(ch)[0]["key"].tolist()]
    keys += fe.finish()[0]["key"].tolist()
    assert seen["fe_stats"] == [fe.stats]
    assert fe.stats["frames_read"] == sent and fe.stats["frames_ip"] > 0
    assert sorted(seen["keys"][0]) == sorted(keys)


def test_udp_filter_passes_only_udp(netns, trace):
    """'udp' compiled by libpcap and run by the kernel. The kernel strips the outer VLAN tag
    before filtering, so UDP in one VLAN passes; UDP inside QinQ (still tagged) does not."""
    pcap, frames = trace
    dissected = [dissect(f) for f in frames]
    udp_anywhere = [f for f, d in zip(frames, dissected) if d["ip"] and d["proto"] == 17]
    expected = [f for f, d in zip(frames, dissected) if d["ip"] and d["proto"] == 17 and d["vlans"] <= 1]
    assert 0 < len(expected) < len(frames)
    prog = compile_filter("udp")
    sent, seen = capture(netns, {"ifaces": ["vB"], "bpf": prog}, replay(pcap), target=lambda _s: len(expected))
    got = [data for data, _w, _t, _l in seen["frames"][0]]
    assert sent == len(frames)
    assert got == expected
    assert all(dissect(g)["ip"] and dissect(g)["proto"] == 17 for g in got)
    assert len(udp_anywhere) >= len(got)
    assert seen["stats"][0] == {"received": len(expected), "dropped": 0}


def test_fanout_splits_by_flow(netns, trace):
    """Two captures in one fanout group: both get frames, together exactly the trace's (an
    IPv4 datagram's fragments arrive as the one datagram the kernel reassembled to hash
    it), and every flow's frames, both directions, go to one member."""
    pcap, frames = trace
    dissected = [dissect(f) for f in frames]
    frags = collections.defaultdict(list)
    for f, d in zip(frames, dissected):
        if d["ip"] and fragmented(d):
            frags[(d["src"], d["dst"], d["id"], d["proto"])].append(d)
    assert frags
    whole = [f for f, d in zip(frames, dissected) if not (d["ip"] and fragmented(d))]
    target = len(whole) + len(frags)
    sent, seen = capture(netns, {"ifaces": ["vB"], "captures": 2, "fanout": 4242}, replay(pcap),
                         target=lambda _s: target)
    members = [[data for data, _w, _t, _l in m] for m in seen["frames"]]
    assert all(members), [len(m) for m in members]
    union = collections.Counter(itertools.chain(*members))
    extra = union - collections.Counter(whole)
    assert collections.Counter(whole) - union == collections.Counter()          # nothing lost
    assert len(list(extra.elements())) == len(frags)
    for f in extra.elements():                                                  # the reassembled ones
        d = dissect(f)
        assert d["ip"] == 4 and not fragmented(d)
        parts = sorted(frags[(d["src"], d["dst"], d["id"], d["proto"])], key=lambda p: p["offset"])
        assert d["payload"] == b"".join(p["payload"] for p in parts)
    owner = {}
    for i, m in enumerate(members):
        for f in m:
            d = dissect(f)
            if d["ip"]:
                assert owner.setdefault(flow(d), i) == i, f"flow {flow(d)} in both members"
    assert len(set(owner.values())) == 2
    assert sum(s["received"] for s in seen["stats"]) == target
    assert all(s["dropped"] == 0 for s in seen["stats"])


def test_two_interfaces_one_capture(netns, trace):
    """One capture on both veth ends: each frame is seen leaving vA and arriving on vB."""
    pcap, frames = trace
    sent, seen = capture(netns, {"ifaces": ["vA", "vB"]}, replay(pcap), target=lambda s: 2 * s)
    got = collections.Counter(data for data, _w, _t, _l in seen["frames"][0])
    assert got == collections.Counter(frames * 2)
    assert seen["linktypes"] == [{"vA": 1, "vB": 1}]
    assert seen["stats"] == [{"received": 2 * sent, "dropped": 0}]


SEND_LO = r'''
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5):
    s.sendto(b"live-test-%d" % i, ("127.0.0.1", 9))
'''


def test_loopback_frames_seen_once(netns):
    """On loopback every frame passes out and back in; the capture keeps it once."""
    def send(ns):
        sh(PY, "-c", SEND_LO, ns=ns)
        return 5
    prog = compile_filter("udp port 9")       # not the ICMP port-unreachable replies
    sent, seen = capture(netns, {"ifaces": ["lo"], "bpf": prog}, send)
    payloads = [data[14 + 20 + 8:] for data, _w, _t, _l in seen["frames"][0]]
    assert payloads == [b"live-test-%d" % i for i in range(5)]
    assert seen["linktypes"] == [{"lo": 1}]


SEND_TUN = r'''
import fcntl, os, struct
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH14x", b"tunL", 0x0001 | 0x1000))   # TUNSETIFF: IFF_TUN | IFF_NO_PI
for i in range(3):
    payload = b"tun-%d" % i
    udp = struct.pack("!HHHH", 4000 + i, 9, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                     bytes([10, 1, 0, 1]), bytes([10, 1, 0, 2]))
    os.write(fd, ip + udp)
os.close(fd)
'''


def test_tun_interface_gives_raw_ip(netns):
    """An IP-only interface (ARPHRD_NONE, as tun and WireGuard) is captured as LINKTYPE_RAW:
    each frame is the IP packet written into the tun device."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun on this machine")
    r = sh("ip", "tuntap", "add", "dev", "tunL", "mode", "tun", ns=netns, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot create a tun device: {r.stderr.strip()}")
    sh("ip", "link", "set", "tunL", "up", ns=netns)

    def send(ns):
        sh(PY, "-c", SEND_TUN, ns=ns)
        return 3
    sent, seen = capture(netns, {"ifaces": ["tunL"]}, send)
    got = seen["frames"][0]
    assert seen["linktypes"] == [{"tunL": 101}]
    assert [(d[0] >> 4, d[28:], lt) for d, _w, _t, lt in got] == [(4, b"tun-%d" % i, 101) for i in range(3)]


def test_no_such_interface():
    with pytest.raises(CaptureError) as e:
        LiveCapture(["nosuch0"])
    assert str(e.value) == "no such network interface: nosuch0"
    with pytest.raises(CaptureError) as e:
        LiveCapture(["bad name\n"])
    assert "\n" not in str(e.value)


def test_bad_filter():
    with pytest.raises(ValueError) as e:
        compile_filter("udp and")
    assert str(e.value) == "bad capture filter 'udp and': can't parse filter expression: syntax error"
    with pytest.raises(ValueError) as e:
        compile_filter("port 99999")
    assert "\n" not in str(e.value) and "port 99999" in str(e.value)


def test_filter_agrees_with_tcpdump():
    """The ctypes path against tcpdump -ddd (the fallback), two programs from one grammar."""
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump not installed (Debian tcpdump)")
    from pipeline.frontend import bpf
    for expr in ("udp", "tcp port 443 or icmp", "vlan and ip6", ""):
        r = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", "-s", "65535", "--", expr],
                           capture_output=True, text=True, timeout=30)
        lines = r.stdout.split()
        want = [tuple(int(x) for x in lines[1 + 4 * i:5 + 4 * i]) for i in range(int(lines[0]))]
        assert compile_filter(expr) == want
        assert bpf._with_tcpdump(shutil.which("tcpdump"), expr, 1, 65535) == want
    assert compile_filter("", snaplen=96) == [(0x06, 0, 0, 96)]
    with pytest.raises(ValueError):
        bpf._with_tcpdump(shutil.which("tcpdump"), "udp and", 1, 65535)


def test_bad_bpf_program_is_refused():
    with pytest.raises(ValueError):
        LiveCapture(["lo"], bpf=[(1, 2, 3)])
    with pytest.raises(CaptureError) as e:
        LiveCapture(["lo"], bpf=[(0xFFFF, 0, 0, 0)])        # no such opcode
    assert str(e.value) == "capturing on lo: the kernel rejected the BPF program (invalid instructions)"


def test_not_root_needs_cap_net_raw(unprivileged):
    code = ("import sys\nfrom pipeline.frontend.live import CaptureError, LiveCapture\n"
            "try:\n    LiveCapture(['lo'])\nexcept CaptureError as e:\n    print(e)\n    sys.exit(3)\n")
    r = subprocess.run(unprivileged.as_nobody(unprivileged.python, "-c", code), cwd="/", capture_output=True,
                       text=True, timeout=30, env=unprivileged.env)
    assert (r.returncode, r.stdout) == (3, NOT_ROOT + "\n"), r.stderr


def test_drop_privileges_unknown_user():
    with pytest.raises(OSError) as e:
        drop_privileges("no-such-user-here")
    assert str(e.value) == "cannot drop privileges: no such user 'no-such-user-here'"
    assert os.geteuid() == 0
