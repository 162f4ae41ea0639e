from sglang_esamp.core import GroupTable


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_same_key_shares_a_slot_and_new_keys_get_fresh_ones():
    table = GroupTable(max_groups=4, ttl=10.0)
    assert table.acquire("a") == (0, True)
    assert table.acquire("a") == (0, False)
    assert table.acquire("b") == (1, True)
    assert table.live == 2


def test_slot_released_after_ttl_then_reused_fresh():
    clock = Clock()
    table = GroupTable(max_groups=1, ttl=5.0, clock=clock)
    table.acquire("a")
    table.acquire("a")
    table.release("a")
    assert table.slot_of("a") == 0 and table.live == 1  # one request still runs
    table.release("a")
    assert table.live == 0 and table.slot_of("a") == 0  # idle, kept for the ttl
    assert table.acquire("a") == (0, False)  # a late sibling finds its distiller
    table.release("a")
    clock.now = 5.0
    table.expire()
    assert table.slot_of("a") is None and table.free == [0]
    assert table.acquire("b") == (0, True)
    assert table.evictions == 0


def test_lru_idle_group_is_evicted_when_full():
    clock = Clock()
    table = GroupTable(max_groups=2, ttl=100.0, clock=clock)
    table.acquire("a")
    table.acquire("b")
    clock.now = 1.0
    table.release("a")
    clock.now = 2.0
    table.release("b")
    slot, fresh = table.acquire("c")
    assert (slot, fresh) == (0, True)  # "a" went idle first
    assert table.slot_of("a") is None and table.slot_of("b") == 1
    assert table.evictions == 1


def test_all_busy_denies_without_sharing():
    table = GroupTable(max_groups=2, ttl=100.0)
    table.acquire("a")
    table.acquire("b")
    assert table.acquire("c") == (None, False)
    assert table.denied == 1
    assert {table.slot_of("a"), table.slot_of("b")} == {0, 1}


def test_release_of_unknown_or_idle_group_is_harmless():
    table = GroupTable(max_groups=1, ttl=100.0)
    table.release("nobody")
    table.acquire("a")
    table.release("a")
    table.release("a")
    assert table.entries["a"].refs == 0


def test_the_lowest_free_slot_goes_first():
    table = GroupTable(max_groups=4, ttl=0.0, clock=lambda: 0.0)
    assert [table.acquire(k)[0] for k in "abc"] == [0, 1, 2]
    table.release("a"), table.release("b")
    table.expire()
    assert table.acquire("d")[0] == 0 and table.acquire("e")[0] == 1  # live slots stay packed from 0
