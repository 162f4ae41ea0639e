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
