"""`CollectPacer`: the long-running processes collect reference cycles by hand, on a pace."""
import gc
import weakref

from pipeline.children import CollectPacer


class Node:
    pass


def test_cycles_are_freed_on_the_pace_not_before():
    try:
        pacer = CollectPacer(every=3)
        assert not gc.isenabled()
        a, b = Node(), Node()
        a.other, b.other = b, a                 # a cycle: reference counting alone never frees it
        gone = weakref.ref(a)
        del a, b
        pacer.tick()
        pacer.tick()
        assert gone() is not None               # automatic collection is off
        pacer.tick()
        assert gone() is None                   # the third message collected it
    finally:
        gc.unfreeze()
        gc.enable()
