"""The pure clustering rules: components under cannot-link, and which id survives."""

from __future__ import annotations

from kenning.services.clustering import Link, assign, components

ORDER = {a: i for i, a in enumerate("abcdefgh")}  # a was seen first, then b, ...


def seen(asset: str) -> int:
    return ORDER[asset]


def test_components_are_connected_components_without_rejections() -> None:
    comps = components("abcdef", [Link("a", "b", 0.9), Link("b", "c", 0.95),
                                  Link("e", "f", 0.9), Link("x", "a", 1.0)])
    assert comps == [{"a", "b", "c"}, {"d"}, {"e", "f"}]  # links to non-members ignored


def test_a_rejected_pair_is_never_joined_even_through_a_third() -> None:
    # c looks like both a and b; a and b were rejected: c goes with its stronger link.
    links = [Link("a", "c", 0.90), Link("b", "c", 0.95), Link("a", "b", 0.99)]
    assert components("abc", links, cannot=[("a", "b")]) == [{"a"}, {"b", "c"}]
    links[0] = Link("a", "c", 0.97)
    assert components("abc", links, cannot=[("b", "a")]) == [{"a", "c"}, {"b"}]


def test_a_confirmation_outweighs_any_measured_score() -> None:
    links = [Link("a", "c", 0.99), Link("b", "c", 1.0 + 1.0)]  # b~c confirmed by a person
    assert components("abc", links, cannot=[("a", "b")]) == [{"a"}, {"b", "c"}]


def test_components_do_not_depend_on_input_order() -> None:
    links = [Link("a", "b", 0.9), Link("c", "d", 0.9), Link("b", "c", 0.9)]
    cannot = [("a", "d")]
    first = components("abcd", links, cannot)
    assert first == components("dcba", list(reversed(links)), cannot)
    assert not any({"a", "d"} <= c for c in first)


def test_merge_keeps_the_id_of_the_oldest_first_seen_asset() -> None:
    plan = assign([{"a", "b", "c", "d"}], {"k1": "c", "k2": "a", "k3": "d"}, seen)
    assert [(p.cluster_id, p.first_asset_id) for p in plan.clusters] == [("k2", "a")]
    assert plan.merged == {"k1": "k2", "k3": "k2"}


def test_split_keeps_the_id_with_the_first_seen_asset_and_founds_new_ones() -> None:
    plan = assign([{"a", "c"}, {"b", "d"}], {"k1": "a"}, seen)
    assert [(p.cluster_id, p.first_asset_id, p.members) for p in plan.clusters] == [
        ("k1", "a", {"a", "c"}), (None, "b", {"b", "d"})]
    assert plan.merged == {}


def test_a_new_asset_alone_founds_its_own_cluster() -> None:
    plan = assign([{"e"}], {}, seen)
    assert [(p.cluster_id, p.first_asset_id) for p in plan.clusters] == [(None, "e")]
