"""`CollectPacer`: the long-running processes collect reference cycles by hand, on a pace."""
import gc
import weakref

from contracts.children import CollectPacer


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


def test_a_cycle_through_frozen_objects_is_freed_by_the_full_pass():
    try:
        pacer = CollectPacer(every=1, full=3)
        old = Node()
        gone = weakref.ref(old)
        pacer.tick()                            # pass 1: old survives and is frozen
        old.me = old                            # now a cycle through a frozen object
        del old
        pacer.tick()                            # pass 2: looks at new objects only
        assert gone() is not None
        pacer.tick()                            # pass 3: the full one
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.enable()


def test_closing_turns_automatic_collection_back_on():
    with CollectPacer():
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
