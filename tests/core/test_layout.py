import torch

from sglang_esamp.core import BatchLayout


def test_pack_unpack_round_trip_with_rows_without_slot():
    slots = [5, 2, -1, 5, 5, 2]
    x = torch.arange(6 * 3, dtype=torch.float32).view(6, 3)
    layout = BatchLayout.from_slots(slots)
    assert layout.slot_list == (5, 2)
    assert layout.max_rows == 3 and layout.num_groups == 2
    assert layout.rows.tolist() == [0, 1, 3, 4, 5]
    packed = layout.pack(x)
    assert packed.shape == (2, 3, 3)
    assert torch.equal(packed[0], x[[0, 3, 4]])
    assert torch.equal(packed[1, :2], x[[1, 5]])
    assert torch.equal(packed[1, 2], torch.zeros(3))  # padding
    assert torch.equal(layout.unpack(packed), x[layout.rows])
    assert layout.mask().tolist() == [[1, 1, 1], [1, 1, 0]]
    assert layout.group_rows.tolist() == [3.0, 2.0]


def test_empty_layout():
    layout = BatchLayout.from_slots([-1, -1])
    assert layout.is_empty and layout.max_rows == 0 and layout.num_rows == 2


def test_split_buckets_groups_by_size_so_padding_stays_below_twice_the_rows():
    slots = [0] * 256 + list(range(1, 32))  # one request with n = 256 beside 31 single rows
    layout = BatchLayout.from_slots(slots[::-1])
    parts = layout.split
    padded = sum(part.num_groups * part.max_rows for part, _ in parts)
    assert len(parts) == 2 and padded == 287 and layout.num_groups * layout.max_rows == 32 * 256
    seen = torch.cat([layout.rows[pos] for _, pos in parts])
    assert sorted(seen.tolist()) == layout.rows.tolist()  # every row in exactly one part
    for part, pos in parts:
        assert torch.equal(part.rows, layout.rows[pos]) and part.num_rows == layout.num_rows
    for sizes in ([3, 5, 9, 17, 2, 1], [7] * 4):
        slots = [g for g, n in enumerate(sizes) for _ in range(n)]
        layout = BatchLayout.from_slots(slots)
        assert sum(p.num_groups * p.max_rows for p, _ in layout.split) <= 2 * len(slots)
    same = BatchLayout.from_slots([0, 1, 1, 0])  # one bucket: the layout itself
    assert same.split == ((same, None),)


def test_stacked_layouts_put_each_groups_rows_of_every_batch_in_one_block():
    first = BatchLayout.from_slots([3, -1, 5, 3])
    second = BatchLayout.from_slots([5, 3, -1])
    both = BatchLayout.stacked([first, second])
    assert both.num_rows == 7
    assert both.slot_list == (3, 5)
    assert both.row_list == (0, 2, 3, 4, 5)  # the second batch's rows follow the first's
    assert both.group_row_list == (3, 2)
    x = torch.arange(7.0).unsqueeze(-1)  # (7, 1): the two batches' tensors concatenated
    assert both.pack(x)[:, :, 0].tolist() == [[0.0, 3.0, 5.0], [2.0, 4.0, 0.0]]
