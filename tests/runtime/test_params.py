import math

import pytest

from sglang_esamp import ESampConfig
from sglang_esamp.runtime.params import group_label, parse_request

CFG = ESampConfig(max_explore=2.0)


def test_plain_request_has_no_spec():
    assert parse_request(None, None, CFG) is None


def test_spec_and_group_keys():
    spec = parse_request(0.25, None, CFG)
    assert spec["explore"] == 0.25 and spec["group"].startswith("r:")
    assert parse_request(0.25, None, CFG)["group"] != spec["group"]  # each request its own group
    named = parse_request(1, "team", CFG)
    assert named == {"explore": 1.0, "group": "g:team"} and group_label(named["group"]) == "team"
    assert parse_request(None, "team", CFG) == {"explore": 0.0, "group": "g:team"}


@pytest.mark.parametrize("value", [-0.1, 2.5, math.nan, math.inf, -math.inf, "0.3", True, [0.2], None])
def test_bad_explore_names_the_field_and_range(value):
    if value is None:
        return  # None means "not given"
    with pytest.raises(ValueError, match=r"explore must be .*\[0, 2\.0\]"):
        parse_request(value, None, CFG)


@pytest.mark.parametrize("group", [5, "", "x" * 257, ["a"]])
def test_bad_group(group):
    with pytest.raises(ValueError, match="explore_group must be a non-empty string of at most 256"):
        parse_request(0.2, group, CFG)


def test_plain_server():
    with pytest.raises(ValueError, match="needs a server started with --enable-esamp"):
        parse_request(0.25, None, None)
    assert parse_request(0.0, None, None) is None
    assert parse_request(None, "g", None) is None
