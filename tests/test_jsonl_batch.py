"""as_lines (collector/outputs/jsonl.py) writes a batch without a dict per record; these
check, with generated records, that its bytes are still as_line's (one dict per record)
whatever the values and plugin fields hold, and however a batch is cut."""
import orjson
from hypothesis import given, settings, strategies as st

from collector.outputs.jsonl import as_line, as_lines
from contracts.record import NAMES, as_dict

WIDTH = len(NAMES)
AWKWARD_TEXT = st.sampled_from(["", ",", "a,b", "],[", "},{", '"', "\\", "\x00", "\n", "%s", "%%", "%b", "été",
                                "日本", "😀,", '"type":', '},{"type":', "null", "1,2"])
TEXT = st.one_of(st.text(max_size=12), AWKWARD_TEXT)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 63, 2 ** 64 - 1),
                   st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e16, 1e-7, 2.5]),
                   TEXT)
VALUE = st.one_of(SCALAR, st.lists(st.integers(0, 4095), max_size=3), st.lists(SCALAR, max_size=3))
PLUGIN_KEY = st.one_of(TEXT, st.sampled_from(["app_guess", "tls.sni", "http.host", "app", "type", "vlan"]))
PLUGINS = st.one_of(
    st.none(), st.just({}), st.just({"app_guess": True}),
    st.dictionaries(PLUGIN_KEY, st.one_of(VALUE, st.dictionaries(TEXT, SCALAR, max_size=2)), max_size=3),
    st.dictionaries(st.integers(0, 3), SCALAR, min_size=1, max_size=2),     # keys as_dict makes strings
    st.sampled_from(["not a dict", 0, [1, 2], 1.5]))


@st.composite
def records(draw):
    values = draw(st.lists(VALUE, min_size=WIDTH, max_size=WIDTH))
    kind = draw(st.sampled_from(["plain", "plugins", "plugins", "short", "long"]))
    if kind == "plugins":
        return values + [draw(PLUGINS)]
    if kind == "short":
        return values[:draw(st.integers(0, WIDTH - 1))]
    if kind == "long":
        return values + [draw(PLUGINS), draw(VALUE)]
    return values


@st.composite
def usual_records(draw):
    """Records like the workers': typed fields, most plugin dicts one of a few."""
    r = [draw(st.sampled_from(["session"])), draw(st.booleans()), draw(st.sampled_from(["idle", "active", "closed"])),
         draw(st.integers(0, 2 ** 64 - 1)), draw(st.one_of(st.none(), st.integers(0, 2 ** 40))), draw(TEXT)]
    r += draw(st.lists(st.one_of(st.integers(0, 2 ** 40), st.floats(0, 2e9), st.none(), TEXT,
                                 st.lists(st.integers(0, 4095), max_size=2)),
                       min_size=WIDTH - len(r), max_size=WIDTH - len(r)))
    p = draw(st.sampled_from([None, {"app_guess": True}, {"app_guess": True}, {"tls.sni": "a.example"},
                              {"http.host": "x", "app_guess": True}, "absent"]))
    return r if p == "absent" else r + [p]


def reference(batch) -> bytes:
    out = []
    for r in batch:
        try:
            out.append(as_line(r))
        except (TypeError, ValueError):     # what the encoder cannot write fails either way
            return None
    return b"".join(out)


def check(batch):
    want = reference(batch)
    if want is None:
        try:
            as_lines(batch)
        except (TypeError, ValueError):
            return
        raise AssertionError("as_lines wrote what as_line cannot")
    assert b"".join(as_lines(batch)) == want


@settings(max_examples=150, deadline=None)
@given(st.lists(records(), max_size=40))
def test_awkward_records_give_as_line_bytes(batch):
    check(batch)


@settings(max_examples=30, deadline=None)
@given(st.lists(usual_records(), min_size=1, max_size=30), st.integers(200, 700))
def test_batches_across_slices_give_as_line_bytes(kinds, n):
    check([kinds[i % len(kinds)] for i in range(n)])


@settings(max_examples=25, deadline=None)
@given(st.lists(usual_records(), min_size=1, max_size=20), st.integers(1, 600), st.lists(records(), max_size=4),
       st.data())
def test_an_odd_record_anywhere_in_a_batch(kinds, n, odd, data):
    batch = [kinds[i % len(kinds)] for i in range(n)]
    for r in odd:
        batch.insert(data.draw(st.integers(0, len(batch))), r)
    check(batch)


def test_the_reference_is_one_dict_per_record():
    """as_line itself: what the comparisons above hold as_lines to."""
    r = [None] * WIDTH + [{"app_guess": True, 1: "x", "type": "shadowed"}]
    r[0], r[17] = "session", [100, 200]
    d = orjson.loads(as_line(r))
    assert list(d) == list(NAMES) + ["app_guess", "1"] and d["type"] == "session" and d["vlan"] == [100, 200]
    assert as_line(r) == orjson.dumps(as_dict(r), default=str) + b"\n"


def test_records_that_are_tuples_or_carry_a_dict_subclass():
    """As as_dict takes them: a tuple record, a plugin dict that is an OrderedDict or a
    defaultdict (found by review: the batch way dropped the subclass's fields, and a
    tuple with plugin fields raised)."""
    from collections import OrderedDict, defaultdict
    base = ["session"] + [None] * (WIDTH - 1)
    batch = [tuple(base + [{"x": 1}]), base + [OrderedDict(x=1)], base + [defaultdict(int, y=2)], tuple(base),
             base + [{"app_guess": True}]]
    for r in batch:
        assert b"".join(as_lines([r])) == as_line(r)
    assert b"".join(as_lines(batch)) == b"".join(map(as_line, batch))
    assert orjson.loads(b"".join(as_lines(batch[1:2])))["x"] == 1


CONSTANT = st.one_of(st.just({"app_guess": True}), st.dictionaries(PLUGIN_KEY, SCALAR, min_size=1, max_size=3))


@settings(max_examples=60, deadline=None)
@given(CONSTANT, st.integers(1, 300), st.lists(st.tuples(st.integers(0, 299), CONSTANT), max_size=3),
       st.lists(VALUE, min_size=WIDTH, max_size=WIDTH))
def test_batches_whose_plugin_fields_are_all_alike(head, n, others, values):
    """The batch way for records that all carry the same plugin fields (the port
    guesses'): equal under == is not enough, True == 1 == 1.0 write differently."""
    batch = [values + [dict(head)] for _ in range(n)]
    for i, d in others:
        batch[i % n] = values + [d]
    check(batch)


def test_plugin_fields_equal_but_not_alike():
    from collections import OrderedDict
    base = ["session"] + [None] * (WIDTH - 1)
    for odd, tail in (({"app_guess": 1}, b'"app_guess":1}'), ({"app_guess": 1.0}, b'"app_guess":1.0}'),
                      (OrderedDict(app_guess=True), b'"app_guess":true}')):
        batch = [base + [{"app_guess": True}] for _ in range(5)] + [base + [odd]]
        lines = b"".join(as_lines(batch)).splitlines()
        assert lines[-1].endswith(tail) and all(x.endswith(b'"app_guess":true}') for x in lines[:-1])
        assert b"".join(as_lines(batch)) == b"".join(map(as_line, batch))
    # not plain dicts, or values whose == raises (found by review: the batch way raised or
    # wrote a dict subclass's own items() wrongly)
    from collections import UserDict
    from types import MappingProxyType
    import numpy as np

    class Items(dict):
        def items(self):
            return [("app_guess", "other")]
    g = {"app_guess": True}
    for batch in ([base + [g], base + [UserDict(g)]], [base + [g], base + [MappingProxyType(g)]],
                  [base + [g], base + [np.array([1, 2])]], [base + [{"k": "x"}], base + [{"k": np.array(["a"])}]],
                  [base + [g], base + [Items(g)]]):
        assert b"".join(as_lines(batch)) == b"".join(map(as_line, batch))
    # equal dicts, their keys in another order: written in each one's order
    batch = [base + [{"a": "x", "b": True}] for _ in range(3)] + [base + [{"b": True, "a": "x"}]]
    lines = b"".join(as_lines(batch)).splitlines()
    assert lines[0].endswith(b'"a":"x","b":true}') and lines[-1].endswith(b'"b":true,"a":"x"}')
