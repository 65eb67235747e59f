"""HTTP content classification as MMT does it: class = top-level media type.

content_type is the media type without parameters ("text/html"); content_class
its top-level part when it is one of MMT's classes (text, image, audio, video,
application), else None. content_flags is a comma-separated, sorted list of
what the transfer does to the body, from the response headers: "chunked"
(Transfer-Encoding), the Content-Encoding codings ("gzip", "deflate", "br",
"zstd", "compress"), "partial" (206 / Content-Range) and "multipart" (a
multipart/* type); None when none applies.
"""

CLASSES = frozenset(("text", "image", "audio", "video", "application"))
_CODINGS = frozenset(("gzip", "x-gzip", "deflate", "br", "zstd", "compress", "x-compress"))


def media_type(value):
    """'Text/HTML; charset=utf-8' -> 'text/html'; None when it is not type/subtype."""
    if not value:
        return None
    t = value.split(";", 1)[0].strip().lower()
    if "/" not in t or " " in t:
        return None
    return t


def content_class(ctype):
    if not ctype:
        return None
    top = ctype.split("/", 1)[0]
    return top if top in CLASSES else None


def content_flags(transfer_encoding=None, content_encoding=None, status=None, content_range=None, ctype=None):
    flags = set()
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        flags.add("chunked")
    if content_encoding:
        for c in content_encoding.lower().split(","):
            c = c.strip()
            if c in _CODINGS:
                flags.add(c[2:] if c.startswith("x-") else c)
    if status == 206 or content_range:
        flags.add("partial")
    if ctype and ctype.startswith("multipart/"):
        flags.add("multipart")
    return ",".join(sorted(flags)) or None
