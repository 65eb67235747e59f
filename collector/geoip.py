"""GeoIP and ASN lookups in MaxMind DB files (`--geoip-db`, `--asn-db`), for the collector's enrichment.

MaxMind DB (.mmdb) is the format SIEMs and Elastic's geoip processor read:
MaxMind's GeoLite2/GeoIP2 City, Country and ASN, and DB-IP's and others'
files in the same format. The `maxminddb` package (MaxMind's own reader, a C
extension over libmaxminddb where built) is imported only when a database is
given, so a run without one needs nothing more.

A lookup gives the record fields' values (contracts/record.py: `*_country`,
`*_city`, `*_geo`, `*_asn`, `*_as_org`), each checked against its kind here,
since a third-party file may hold anything: a value of the wrong type is
left out (null), never written.
"""
import math

GEO_FIELDS = ("country", "city", "geo", "asn", "as_org")     # the suffixes of client_* and server_*
NOTHING = (None,) * len(GEO_FIELDS)
ASN_MAX = (1 << 32) - 1


class GeoError(ValueError):
    """A database that cannot be used, in one line."""


def open_db(path: str, flag: str):
    """A reader of the MaxMind DB file at `path`, given as `flag` (--geoip-db or --asn-db);
    GeoError (one line) if the package is missing, the file cannot be read or is not a
    MaxMind DB, or it is plainly the other kind of database."""
    try:
        import maxminddb
    except ImportError:
        raise GeoError(f"{flag} needs the maxminddb package (pip install maxminddb)") from None
    try:
        reader = maxminddb.open_database(path)
    except OSError as e:
        raise GeoError(f"{flag} {path}: {e.strerror or e}") from None
    except (maxminddb.InvalidDatabaseError, ValueError, TypeError) as e:
        raise GeoError(f"{flag} {path}: not a MaxMind DB file ({str(e).splitlines()[0] if str(e) else 'invalid'})") \
            from None
    kind = str(reader.metadata().database_type)
    words = kind.lower()
    is_geo = "city" in words or "country" in words
    is_asn = "asn" in words or "isp" in words
    if flag == "--geoip-db" and is_asn and not is_geo:
        reader.close()
        raise GeoError(f"{flag} {path}: a {kind} database has no locations (give it as --asn-db)")
    if flag == "--asn-db" and is_geo and not is_asn:
        reader.close()
        raise GeoError(f"{flag} {path}: a {kind} database has no autonomous systems (give it as --geoip-db)")
    return reader


def _text(v):
    return v if isinstance(v, str) and v else None


def _number(v, limit):
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and -limit <= v <= limit:
        return v
    return None


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


class Lookup:
    """address text -> (country, city, geo, asn, as_org), from either database or both."""

    def __init__(self, geoip_db: str = None, asn_db: str = None):
        self.geo = open_db(geoip_db, "--geoip-db") if geoip_db else None
        try:
            self.asn = open_db(asn_db, "--asn-db") if asn_db else None
        except GeoError:
            self.close()
            raise

    def __call__(self, ip: str) -> tuple:
        ip = ip.partition("%")[0]           # a zone (fe80::1%eth0) is no part of the address
        country = city = geo = asn = org = None
        if self.geo is not None:
            rec = self._record(self.geo, ip)
            if rec is not None:
                country = _text(_get(rec, "country", "iso_code"))
                city = _text(_get(rec, "city", "names", "en"))
                lat = _number(_get(rec, "location", "latitude"), 90)
                lon = _number(_get(rec, "location", "longitude"), 180)
                if lat is not None and lon is not None:
                    geo = {"lat": lat, "lon": lon}
        if self.asn is not None:
            rec = self._record(self.asn, ip)
            if rec is not None:
                n = rec.get("autonomous_system_number")
                if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= ASN_MAX:
                    asn = n
                org = _text(rec.get("autonomous_system_organization"))
        return country, city, geo, asn, org

    @staticmethod
    def _record(reader, ip):
        try:
            rec = reader.get(ip)
        except ValueError:          # an IPv6 address in an IPv4-only database, an odd text
            return None
        return rec if isinstance(rec, dict) else None

    def close(self) -> None:
        for reader in (self.geo, getattr(self, "asn", None)):
            if reader is not None:
                reader.close()
