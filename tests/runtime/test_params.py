import math

import pytest

from sglang_esamp import ESampConfig
from sglang_esamp.runtime.params import CUSTOM_KEY, group_label, parse_request

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


def test_a_huge_integer_is_a_clear_error_not_an_overflow():
    with pytest.raises(ValueError, match="explore must be a finite number"):
        parse_request(10**400, None, CFG)


@pytest.mark.parametrize("group", ["   ", "a\nb", "tab\there", "nul\x00", "\ud800lone", "bell\x07", "x" * 257, " " + "x" * 257])
def test_groups_are_printable_and_not_blank(group):
    with pytest.raises(ValueError, match="explore_group must be a non-empty string of at most 256 printable"):
        parse_request(0.2, group, CFG)


def test_group_names_are_trimmed_and_may_be_any_printable_text():
    assert parse_request(0.2, "  team a  ", CFG)["group"] == "g:team a"
    assert parse_request(0.2, "équipe-✓", CFG)["group"] == "g:équipe-✓"
    assert parse_request(0.2, " " + "x" * 256 + " ", CFG)["group"] == "g:" + "x" * 256


def test_reserved_custom_params_keys_are_refused():
    from sglang_esamp.runtime.params import SCOPE_KEY, check_custom_params

    for key in (CUSTOM_KEY, SCOPE_KEY):
        with pytest.raises(ValueError, match=f"custom_params key '{key}' is reserved"):
            check_custom_params({key: {"explore": 1.0, "group": "g:x"}})
    check_custom_params({"temperature": 1.0})
    check_custom_params(None)


def test_named_groups_can_be_turned_off():
    cfg = ESampConfig(named_groups="deny")
    with pytest.raises(ValueError, match="explore_group is turned off on this server"):
        parse_request(0.2, "team", cfg)
    assert parse_request(0.2, None, cfg)["group"].startswith("r:")


def test_scoped_groups_meet_only_within_a_scope():
    cfg = ESampConfig(scope_header="X-Tenant")
    a1, a2 = parse_request(0.2, "team", cfg, scope="acme"), parse_request(0.2, "team", cfg, scope="acme")
    b = parse_request(0.2, "team", cfg, scope="bolt")
    assert a1["group"] == a2["group"] != b["group"]
    assert group_label(a1["group"]) == group_label(b["group"]) == "team"
    with pytest.raises(ValueError, match="explore_group needs the X-Tenant header"):
        parse_request(0.2, "team", cfg, scope=None)
    assert parse_request(0.2, None, cfg, scope=None)["group"].startswith("r:")  # a private group needs no scope


def test_read_spec_accepts_what_parse_request_makes():
    from sglang_esamp.runtime.params import read_spec

    for cfg, scope in ((CFG, None), (ESampConfig(max_explore=2.0, scope_header="X-Tenant"), "acme")):
        for group in (None, "team", "x" * 256):
            spec = parse_request(1.5, group, cfg, scope)
            assert read_spec(spec, cfg) == (1.5, spec["group"], None)
            spec = parse_request(1.5, group, cfg, scope, n=4)
            assert read_spec(spec, cfg) == (1.5, spec["group"], (spec["strata"][0], 4))


def test_stratified_is_on_for_esamp_with_several_samples_and_switchable():
    assert "strata" not in parse_request(0.5, None, CFG, n=1)  # one sample: nothing to stratify
    assert "strata" not in parse_request(0.0, None, CFG, n=8)  # explore 0: off unless asked
    assert "strata" not in parse_request(0.5, None, CFG, stratified=False, n=8)
    on = parse_request(None, None, CFG, stratified=True, n=8)
    assert on["explore"] == 0.0 and on["strata"][1] == 8  # a plain diverse-n request
    a, b = parse_request(0.5, "team", CFG, n=3), parse_request(0.5, "team", CFG, n=3)
    assert a["group"] == b["group"] and a["strata"][0] != b["strata"][0]  # one group, two calls


@pytest.mark.parametrize("value", [1, 0, "true", None.__class__, [True]])
def test_stratified_must_be_a_boolean(value):
    with pytest.raises(ValueError, match="stratified must be true or false"):
        parse_request(0.5, None, CFG, stratified=value, n=4)


def test_stratified_needs_an_esamp_server():
    with pytest.raises(ValueError, match="stratified needs a server started with --enable-esamp"):
        parse_request(None, None, None, stratified=True, n=4)
    assert parse_request(None, None, None, stratified=False, n=4) is None


def test_read_spec_refuses_forged_strata():
    from sglang_esamp.runtime.params import read_spec

    good = parse_request(0.5, None, CFG, n=4)
    for bad in ([good["strata"][0], 1], [good["strata"][0], True], ["short", 4], [good["strata"][0]], "x", [good["strata"][0], 1 << 20]):
        assert read_spec(good | {"strata": bad}, CFG) is None, bad
