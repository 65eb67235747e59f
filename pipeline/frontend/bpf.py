"""Capture filter expressions (tcpdump syntax) compiled to classic BPF programs.

Live capture filters in the kernel, before a frame ever reaches the ring, so the
expression a user writes must become a classic BPF program (a list of
(code, jt, jf, k) instructions for SO_ATTACH_FILTER). libpcap owns that grammar;
we call its compiler through ctypes rather than re-implement it. Where libpcap
cannot be loaded, `tcpdump -ddd` (which links it) prints the same program.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import threading

__all__ = ["compile_filter", "BPF_MAXINSNS"]

BPF_MAXINSNS = 4096                 # the kernel's limit for one classic program
PCAP_NETMASK_UNKNOWN = 0xFFFFFFFF
_LIB_NAMES = ("libpcap.so.1", "libpcap.so.0.8", "libpcap.so")
# tcpdump -y takes a DLT name; the link types a live capture here can produce
_DLT_NAMES = {1: "EN10MB", 12: "RAW", 101: "RAW", 113: "LINUX_SLL", 276: "LINUX_SLL2"}


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


_lock = threading.Lock()            # pcap_compile is not thread-safe in older libpcaps
_lib = None
_lib_tried = False


def _libpcap():
    """libpcap as a ctypes library, or None where it is not installed."""
    global _lib, _lib_tried
    if _lib_tried:
        return _lib
    _lib_tried = True
    names = [n for n in (ctypes.util.find_library("pcap"),) if n] + list(_LIB_NAMES)
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_uint32]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
        lib.pcap_freecode.restype = None
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.pcap_close.restype = None
        _lib = lib
        break
    return _lib


def _one_line(text: str) -> str:
    return " ".join(text.split())


def compile_filter(expr: str, linktype: int = 1, snaplen: int = 65535) -> list[tuple]:
    """Compile a tcpdump-syntax filter for frames of `linktype` into [(code, jt, jf, k), ...].
    Accepting programs return `snaplen` (the bytes of each frame to keep).
    ValueError with libpcap's message when the expression is bad; OSError when neither
    libpcap nor tcpdump is available."""
    if not isinstance(expr, str):
        raise ValueError(f"capture filter must be text, not {type(expr).__name__}")
    if "\0" in expr:
        raise ValueError("capture filter contains a NUL character")
    if not 1 <= int(snaplen) <= 0x7FFFFFFF:
        raise ValueError(f"snapshot length {snaplen} out of range")
    lib = _libpcap()
    if lib is not None:
        return _with_libpcap(lib, expr, int(linktype), int(snaplen))
    tcpdump = shutil.which("tcpdump")
    if tcpdump:
        return _with_tcpdump(tcpdump, expr, int(linktype), int(snaplen))
    raise OSError("cannot compile capture filters: neither libpcap nor tcpdump is installed (Debian libpcap0.8)")


def _with_libpcap(lib, expr: str, linktype: int, snaplen: int) -> list[tuple]:
    with _lock:
        p = lib.pcap_open_dead(linktype, snaplen)
        if not p:
            raise OSError(f"libpcap cannot open a handle for link type {linktype}")
        try:
            prog = _Program()
            if lib.pcap_compile(p, ctypes.byref(prog), expr.encode(), 1, PCAP_NETMASK_UNKNOWN) != 0:
                msg = (lib.pcap_geterr(p) or b"unknown error").decode(errors="replace")
                raise ValueError(f"bad capture filter {expr!r}: {_one_line(msg)}")
            try:
                return [(i.code, i.jt, i.jf, i.k) for i in prog.bf_insns[:prog.bf_len]]
            finally:
                lib.pcap_freecode(ctypes.byref(prog))
        finally:
            lib.pcap_close(p)


def _with_tcpdump(tcpdump: str, expr: str, linktype: int, snaplen: int) -> list[tuple]:
    dlt = _DLT_NAMES.get(linktype)
    if dlt is None:
        raise ValueError(f"cannot compile capture filters for link type {linktype} without libpcap")
    try:
        r = subprocess.run([tcpdump, "-ddd", "-y", dlt, "-s", str(snaplen), "--", expr],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise OSError(f"cannot run tcpdump to compile the capture filter: {e}") from None
    if r.returncode != 0:
        msg = _one_line(r.stderr).removeprefix("tcpdump: ") or f"tcpdump exited with {r.returncode}"
        raise ValueError(f"bad capture filter {expr!r}: {msg}")
    try:
        lines = r.stdout.split("\n")
        n = int(lines[0])
        prog = [tuple(int(x) for x in line.split()) for line in lines[1:n + 1]]
        if len(prog) != n or any(len(t) != 4 for t in prog):
            raise ValueError
    except (ValueError, IndexError):
        raise OSError("tcpdump -ddd printed something that is not a BPF program") from None
    return prog
