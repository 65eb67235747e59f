"""HTTP/1.x: a request line (METHOD target HTTP/1.x) or a status line; headers
read with dpkt.http.parse_headers. Gives host, method, URI, user agent, status
and the response's Content-Type for the content class."""
import io

from .registry import NO, SURE, TCP, register

METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"PATCH ",
           b"TRACE ", b"PROPFIND ", b"PROPPATCH ", b"MKCOL ", b"COPY ", b"MOVE ", b"LOCK ", b"UNLOCK ",
           b"REPORT ", b"SEARCH ", b"SUBSCRIBE ", b"NOTIFY ")
MAX_URI = 512


def match(p, from_client, state):
    if from_client:
        if p.startswith(METHODS):
            eol = p.find(b"\r\n", 0, 4096)
            line = p[:eol] if eol > 0 else p[:4096]
            if b" HTTP/1." in line or (eol < 0 and len(p) >= 1400):
                return SURE
        return NO
    if p.startswith(b"HTTP/1.") and len(p) >= 12 and p[8] == 0x20 and p[9:12].isdigit():
        return SURE
    return NO


def _headers(p):
    import dpkt.http         # here, not at the top: see workers/classify/__init__.py
    end = p.find(b"\r\n\r\n")
    block = p if end < 0 else p[:end + 4]
    first, _, rest = bytes(block).partition(b"\r\n")
    try:
        return first, dpkt.http.parse_headers(io.BytesIO(rest))
    except dpkt.UnpackError:
        return first, {}


def _one(v):
    return v[0] if isinstance(v, list) else v


def parse(p, from_client, state, meta):
    if from_client and "http.method" not in meta and p.startswith(METHODS):
        first, h = _headers(p)
        parts = first.split(b" ")
        meta["http.method"] = parts[0].decode("ascii", "replace")
        if len(parts) > 1:
            meta["http.uri"] = parts[1][:MAX_URI].decode("ascii", "replace")
        if "host" in h:
            meta["http.host"] = _one(h["host"]).lower()
        if "user-agent" in h:
            meta["http.user_agent"] = _one(h["user-agent"])
    elif not from_client and "http.status" not in meta and p.startswith(b"HTTP/1."):
        first, h = _headers(p)
        try:
            meta["http.status"] = int(first[9:12])
        except ValueError:
            pass
        for name in ("content-type", "content-encoding", "transfer-encoding", "content-range", "server"):
            if name in h:
                meta["http." + name.replace("-", "_")] = _one(h[name])
    return "http.method" in meta and "http.status" in meta


register("http", (TCP,), (80, 8080, 8000, 8008, 8081, 3128, 8888), match, parse, snap=1500,
         first=bytes({m[0] for m in METHODS}) + b"H")
