"""Live capture from network interfaces through Linux AF_PACKET TPACKET_V3 rings.

The front-end decodes frames in numpy batches (readers.Chunk columns), so live
capture hands it the same thing: the kernel fills a memory-mapped ring in blocks
of many frames, and each block the kernel retires (full, or after
block_timeout_ms) becomes one Chunk with one copy of its bytes, after which the
block goes straight back to the kernel. No per-frame system call, no libpcap;
standard library and numpy only.

    cap = LiveCapture(["eth0"], bpf=compile_filter("tcp or udp"))
    drop_privileges("nobody")
    for chunk in cap.chunks(stop=lambda: stopping):
        if len(chunk):  # an EMPTY Chunk means "idle for block_timeout_ms": advance wall-clock expiry
            frontend.process(chunk)
    cap.stats()   # {"received": ..., "dropped": ...}
    cap.close()

As libpcap does: the kernel strips VLAN tags on receive, so a tag it reports is
put back into the frame (frames are identical to what was on the wire), and
frames leaving a loopback interface are skipped (each would otherwise be seen
twice). With fanout_group, K processes opening the same interfaces with the
same group share the load, the kernel hashing each flow (both directions,
IP fragments reassembled first) to one of them.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import struct
from typing import Callable, Iterator

import numpy as np

from contracts.children import drop_privileges

from .readers import CaptureError, Chunk

__all__ = ["LiveCapture", "drop_privileges", "CaptureError"]

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/if_arp.h>, <asm-generic/socket.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_MR_PROMISC = 1
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
PACKET_OUTGOING = 4
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETH_P_ALL = 3
ETH_P_8021Q = 0x8100
SO_ATTACH_FILTER = 26
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
# what each supported interface type delivers on a SOCK_RAW packet socket
_LINKTYPES = {ARPHRD_ETHER: LINKTYPE_ETHERNET, ARPHRD_LOOPBACK: LINKTYPE_ETHERNET, ARPHRD_NONE: LINKTYPE_RAW}
_ARPHRD_NAMES = {0: "NET/ROM", 24: "IEEE 1394", 32: "InfiniBand", 512: "PPP", 768: "IPIP tunnel",
                 769: "IPv6-in-IPv6 tunnel", 776: "SIT tunnel", 778: "GRE tunnel", 801: "802.11",
                 803: "802.11 radiotap", 823: "IP6GRE tunnel", 824: "netlink", 825: "6LoWPAN",
                 827: "vsock monitor"}

BLOCK_SIZE = 1 << 20          # one ring block: a chunk holds at most this many bytes of frames
FRAME_SIZE = 2048             # only a bookkeeping unit for TPACKET_V3 (frames are packed in blocks)
MAX_SNAPLEN = 262144
BPF_MAXINSNS = 4096

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1
_BLOCK_HDR = struct.Struct("=IIIIII")   # version, offset_to_priv, block_status, num_pkts, offset_to_first_pkt, blk_len
_U32 = struct.Struct("=I")
# struct tpacket3_hdr (48 bytes) followed by struct sockaddr_ll (of which we read the packet type)
_PKT_HDR = np.dtype({
    "names": ["next", "sec", "nsec", "snaplen", "len", "status", "mac", "vlan_tci", "vlan_tpid", "pkttype"],
    "formats": ["=u4", "=u4", "=u4", "=u4", "=u4", "=u4", "=u2", "=u4", "=u2", "u1"],
    "offsets": [0, 4, 8, 12, 16, 20, 24, 32, 36, 58],
    "itemsize": 68})


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _no_cap(iface: str) -> str:
    return f"capturing on {iface} needs CAP_NET_RAW (run as root or grant the capability)"


def _check_bpf(bpf) -> list[tuple]:
    """A classic BPF program as given by the caller, checked for shape (the kernel checks the rest)."""
    try:
        prog = [tuple(int(x) for x in insn) for insn in bpf]
    except (TypeError, ValueError):
        raise ValueError("BPF program must be a list of (code, jt, jf, k) integer tuples") from None
    if not 1 <= len(prog) <= BPF_MAXINSNS:
        raise ValueError(f"BPF program has {len(prog)} instructions; 1 to {BPF_MAXINSNS} allowed")
    for i, insn in enumerate(prog):
        if len(insn) != 4 or not (0 <= insn[0] <= 0xFFFF and 0 <= insn[1] <= 255 and 0 <= insn[2] <= 255
                                  and 0 <= insn[3] <= 0xFFFFFFFF):
            raise ValueError(f"BPF instruction {i} {insn} is not a valid (code, jt, jf, k)")
    return prog


class _Ring:
    """One interface: its packet socket, its mapped TPACKET_V3 ring and where we are in it."""

    def __init__(self, iface: str, block_nr: int, snaplen: int, promisc: bool, bpf, fanout, timeout_ms: int):
        self.iface = iface
        self.sock = None
        self.map = None
        self.received = self.dropped = 0
        self.block_nr = block_nr
        self.cursor = 0
        try:
            ifindex = socket.if_nametoindex(iface)
        except OSError:
            raise CaptureError(f"no such network interface: {iface}") from None
        try:
            # protocol 0 until bind: the socket must not take frames of every interface meanwhile
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CaptureError(_no_cap(iface)) from None
        except OSError as e:
            raise CaptureError(f"capturing on {iface}: cannot open a packet socket ({e.strerror or e})") from None
        try:
            self._setup(ifindex, snaplen, promisc, bpf, fanout, timeout_ms)
        except BaseException:
            self.close()
            raise

    def _setup(self, ifindex, snaplen, promisc, bpf, fanout, timeout_ms):
        iface, s = self.iface, self.sock
        try:
            hw = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", iface.encode()))
        except OSError as e:
            raise CaptureError(f"capturing on {iface}: cannot read its hardware type ({e.strerror or e})") from None
        hatype = struct.unpack_from("=H", hw, 16)[0]
        if hatype not in _LINKTYPES:
            kind = _ARPHRD_NAMES.get(hatype, f"ARPHRD type {hatype}")
            raise CaptureError(f"capturing on {iface}: unsupported interface type ({kind}); "
                               f"Ethernet, loopback and IP-only (tun) interfaces are supported")
        self.linktype = _LINKTYPES[hatype]
        self.loopback = hatype == ARPHRD_LOOPBACK
        step = "set up its capture"
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            if bpf is not None:
                step = "attach the capture filter"
                self._attach(bpf)
            elif snaplen < MAX_SNAPLEN:
                step = "attach the snapshot length"
                self._attach([(0x06, 0, 0, snaplen)])     # BPF "ret #snaplen": the kernel copies no more
            step = "map its capture ring"
            req = struct.pack("=7I", BLOCK_SIZE, self.block_nr, FRAME_SIZE,
                              BLOCK_SIZE // FRAME_SIZE * self.block_nr, timeout_ms, 0, 0)
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
            self.map = mmap.mmap(s.fileno(), BLOCK_SIZE * self.block_nr, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
            step = "bind to it"
            s.bind((iface, ETH_P_ALL))
            if promisc:
                step = "put it in promiscuous mode"
                mreq = struct.pack("=iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            if fanout is not None:
                group, mode = fanout
                step = f"join fanout group {group}"
                s.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", group | mode << 16))
        except PermissionError:
            raise CaptureError(_no_cap(iface)) from None
        except OSError as e:
            if e.errno == errno.ENODEV:
                raise CaptureError(f"no such network interface: {iface}") from None
            if e.errno == errno.ENETDOWN:
                raise CaptureError(f"capturing on {iface}: the interface is down") from None
            if step.startswith("join fanout") and e.errno in (errno.EINVAL, errno.EBUSY, errno.EALREADY):
                raise CaptureError(f"capturing on {iface}: cannot {step} (used by another kind of socket "
                                   f"or another interface)") from None
            if step == "map its capture ring" and e.errno == errno.ENOMEM:
                raise CaptureError(f"capturing on {iface}: not enough memory for a "
                                   f"{self.block_nr} MiB capture ring") from None
            raise CaptureError(f"capturing on {iface}: cannot {step} ({e.strerror or e})") from None

    def _attach(self, prog):
        insns = (_SockFilter * len(prog))(*[_SockFilter(*t) for t in prog])
        fprog = _SockFprog(len(prog), ctypes.cast(insns, ctypes.POINTER(_SockFilter)))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise CaptureError(f"capturing on {self.iface}: the kernel rejected the BPF program "
                                   f"(invalid instructions)") from None
            raise

    def take_stats(self) -> None:
        """Add what the kernel counted since the last read (reading resets its counters)."""
        if self.sock is None:
            return
        try:
            packets, drops, _freezes = struct.unpack("=III", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        except OSError:
            return
        self.received += packets        # tp_packets includes tp_drops (frames that passed the filter)
        self.dropped += drops

    def ready(self) -> bool:
        off = self.cursor * BLOCK_SIZE
        return _BLOCK_HDR.unpack_from(self.map, off)[2] & TP_STATUS_USER != 0

    def take_block(self, snaplen: int) -> Chunk:
        """The block at the cursor (owned by us) as a Chunk; the block goes back to the kernel."""
        base = self.cursor * BLOCK_SIZE
        try:
            _v, _priv, _status, num, first, blk_len = _BLOCK_HDR.unpack_from(self.map, base)
            blk_len = min(blk_len, BLOCK_SIZE)
            data = self.map[base:base + blk_len] if num else b""       # the one copy of the frames
        finally:
            _U32.pack_into(self.map, base + 8, TP_STATUS_KERNEL)
            self.cursor = (self.cursor + 1) % self.block_nr
        return _block_chunk(data, num, first, self.linktype, self.loopback, snaplen)

    def close(self):
        if self.sock is not None:
            self.take_stats()
        if self.map is not None:
            self.map.close()
            self.map = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _empty_chunk() -> Chunk:
    return Chunk(data=b"", offsets=np.zeros(0, np.int64), caplen=np.zeros(0, np.uint32),
                 wirelen=np.zeros(0, np.uint32), ts=np.zeros(0, np.float64), linktype=np.zeros(0, np.uint16))


def _block_chunk(data: bytes, num: int, first: int, linktype: int, loopback: bool, snaplen: int) -> Chunk:
    """Columns of the num packets of a copied block (packet headers start at `first`)."""
    size = len(data)
    offs, pos, nxt = [], first, _U32.unpack_from
    try:
        for _ in range(num):                  # the hot loop: follow tp_next_offset
            if pos + _PKT_HDR.itemsize > size:
                break
            offs.append(pos)
            step = nxt(data, pos)[0]
            if step == 0:
                break
            pos += step
    except struct.error:
        pass
    if not offs:
        return _empty_chunk()
    heads = np.ndarray((size - _PKT_HDR.itemsize + 1,), _PKT_HDR, buffer=data, strides=(1,))
    h = heads[np.array(offs, np.int64)]
    start = np.array(offs, np.int64) + h["mac"]
    cap = h["snaplen"].astype(np.int64)
    keep = start + cap <= size                # a block the kernel wrote is consistent; be safe anyway
    if loopback:
        keep &= h["pkttype"] != PACKET_OUTGOING
    if not keep.all():
        h, start, cap = h[keep], start[keep], cap[keep]
    wire = h["len"].astype(np.int64)
    tagged = np.flatnonzero((h["status"] & TP_STATUS_VLAN_VALID) != 0) if linktype == LINKTYPE_ETHERNET else ()
    if len(tagged):
        data, start, cap, wire = _put_back_tags(data, h, tagged, start, cap, wire)
    return Chunk(data=data, offsets=start, caplen=np.minimum(cap, snaplen).astype(np.uint32),
                 wirelen=wire.astype(np.uint32), ts=h["sec"] + h["nsec"] * 1e-9,
                 linktype=np.full(len(start), linktype, np.uint16))


def _put_back_tags(data: bytes, h, tagged, start, cap, wire):
    """The kernel removed the outer VLAN tag of these frames and reported it in the header:
    rebuild each with its tag after the MAC addresses, appended after the block's bytes."""
    extra = bytearray()
    start, cap, wire = start.copy(), cap.copy(), wire.copy()
    tpid_ok = (h["status"] & TP_STATUS_VLAN_TPID_VALID) != 0
    for i in tagged.tolist():
        s, c = int(start[i]), int(cap[i])
        if c < 12:
            continue
        tpid = int(h["vlan_tpid"][i]) if tpid_ok[i] and h["vlan_tpid"][i] else ETH_P_8021Q
        at = len(data) + len(extra)
        extra += data[s:s + 12]
        extra += struct.pack("!HH", tpid, int(h["vlan_tci"][i]) & 0xFFFF)
        extra += data[s + 12:s + c]
        start[i], cap[i], wire[i] = at, c + 4, wire[i] + 4
    return data + bytes(extra), start, cap, wire


class LiveCapture:
    """Frames from one or more interfaces, as readers.Chunk objects (one per ring block).

    ring_mb: ring size per interface (1 MiB blocks). snaplen: bytes kept per frame.
    bpf: a classic BPF program [(code, jt, jf, k), ...] (see bpf.compile_filter), applied
    in the kernel. fanout_group: join PACKET_FANOUT group fanout_group + i for the i-th
    interface (one group per interface: the kernel ties a group to one device), hashing
    flows; K processes passing the same value share the load. fanout_defrag: the kernel
    reassembles IPv4 fragments before hashing (so a datagram's fragments follow its
    flow), and then delivers the datagram as ONE frame (the fragments' frames are not
    seen). block_timeout_ms: the
    longest a partly filled block waits before it is handed over (latency when traffic
    is light), and how often chunks() yields an empty chunk while the link is idle.
    Raises CaptureError with a one-line message (missing CAP_NET_RAW, no such interface,
    unsupported interface type) and ValueError for bad arguments.
    """

    def __init__(self, interfaces: list[str], ring_mb: int = 64, snaplen: int = 65535, promisc: bool = True,
                 bpf: list | None = None, fanout_group: int | None = None, block_timeout_ms: int = 100,
                 fanout_defrag: bool = True):
        if isinstance(interfaces, str):
            interfaces = [interfaces]
        interfaces = list(interfaces)
        if not interfaces:
            raise ValueError("live capture needs at least one interface")
        for name in interfaces:
            if not isinstance(name, str) or not name or len(name) >= 16 or "/" in name or "\0" in name \
                    or not name.isprintable() or any(c.isspace() for c in name):
                raise CaptureError(f"no such network interface: {name!r}")
        if len(set(interfaces)) != len(interfaces):
            raise ValueError(f"an interface is named twice: {', '.join(interfaces)}")
        if not 1 <= int(ring_mb) <= 1 << 16:
            raise ValueError(f"ring size {ring_mb} MiB out of range (1 to 65536)")
        if not 1 <= int(snaplen) <= MAX_SNAPLEN:
            raise ValueError(f"snapshot length {snaplen} out of range (1 to {MAX_SNAPLEN})")
        if fanout_group is not None and not 0 <= int(fanout_group) <= 0xFFFF - (len(interfaces) - 1):
            raise ValueError(f"fanout group {fanout_group} out of range (0 to 65535)")
        if not 1 <= int(block_timeout_ms) <= 60000:
            raise ValueError(f"block timeout {block_timeout_ms} ms out of range (1 to 60000)")
        prog = _check_bpf(bpf) if bpf is not None else None
        self.interfaces = interfaces
        self.snaplen = int(snaplen)
        self.block_timeout_ms = int(block_timeout_ms)
        self._rings: list[_Ring] = []
        try:
            for i, name in enumerate(interfaces):
                fanout = None if fanout_group is None else (
                    int(fanout_group) + i, PACKET_FANOUT_HASH | (PACKET_FANOUT_FLAG_DEFRAG if fanout_defrag else 0))
                self._rings.append(_Ring(name, int(ring_mb), self.snaplen, promisc, prog, fanout,
                                         self.block_timeout_ms))
        except BaseException:
            self.close()
            raise
        self._next = 0       # the ring served first next time: no interface starves the others

    @property
    def linktypes(self) -> dict:
        """LINKTYPE_* of the frames of each interface."""
        return {r.iface: r.linktype for r in self._rings}

    def fileno(self) -> list[int]:
        return [r.sock.fileno() for r in self._rings if r.sock is not None]

    def chunks(self, stop: Callable[[], bool] = lambda: False) -> Iterator[Chunk]:
        """Yield one Chunk per ring block the kernel hands over (never with zero frames), and an
        EMPTY Chunk (len 0) whenever block_timeout_ms pass with none, so that the caller can
        expire sessions by wall clock on an idle link. Returns when stop() is true (checked
        before each wait and after each chunk)."""
        poller = select.poll()
        for r in self._rings:
            poller.register(r.sock.fileno(), select.POLLIN | select.POLLERR)
        while not stop():
            served = False
            n = len(self._rings)
            for k in range(n):
                r = self._rings[(self._next + k) % n]
                if r.map is not None and r.ready():
                    chunk = r.take_block(self.snaplen)
                    served = True
                    if len(chunk):
                        yield chunk
                        if stop():
                            return
            self._next = (self._next + 1) % max(n, 1)
            if served:
                continue
            try:
                events = poller.poll(self.block_timeout_ms)
            except InterruptedError:
                continue
            if not events and not any(r.map is not None and r.ready() for r in self._rings):
                yield _empty_chunk()
            else:
                for fd, ev in events:
                    if ev & select.POLLERR:
                        self._socket_error(fd)

    def _socket_error(self, fd: int) -> None:
        for r in self._rings:
            if r.sock is not None and r.sock.fileno() == fd:
                err = r.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == errno.ENETDOWN:
                    raise CaptureError(f"capturing on {r.iface}: the interface went down")
                if err == errno.ENODEV:
                    raise CaptureError(f"capturing on {r.iface}: the interface was removed")
                if err:
                    raise CaptureError(f"capturing on {r.iface}: {os.strerror(err)}")

    def stats(self) -> dict:
        """Since the capture opened, over all interfaces: received = frames that passed the
        filter (those dropped included, as libpcap's ps_recv; on loopback both the outgoing and
        the incoming copy, of which chunks() yields one), dropped = frames lost because the
        ring was full."""
        for r in self._rings:
            r.take_stats()
        return {"received": sum(r.received for r in self._rings), "dropped": sum(r.dropped for r in self._rings)}

    def close(self) -> None:
        for r in self._rings:
            r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
