"""The op-kind registry (``engine.kinds``): every kind of the catalogue has every piece, and the check
names what a kind lacks."""

from __future__ import annotations

from mcutrain.engine import kinds
from mcutrain.engine.ops import OUTPUT_TYPES


def test_every_kind_of_the_catalogue_is_complete():
    assert kinds.incomplete() == {}
    registry = kinds.registry()
    assert set(registry) == set(OUTPUT_TYPES)
    for name, kind in registry.items():
        assert callable(kind.output_types) and callable(kind.kernel) and callable(kind.emitter), name
        assert (kind.vjp is None) != (kind.no_vjp is None), name
    assert {k for k, v in registry.items() if v.arena_kernel} == {"mbconv_rows", "mbconv_grad"}
    assert registry["mbconv_grad"].scratch is not None and registry["linear"].scratch is None
    assert registry["requant_grad"].inplace and registry["linear"].inplace == ()


def test_a_kind_missing_pieces_is_named():
    catalogue = dict(OUTPUT_TYPES, new_kind=OUTPUT_TYPES["add"])
    assert kinds.incomplete(catalogue) == {
        "new_kind": ["kernel", "emitter", "vjp (a rule, or a reason in NO_VJP: exactly one)"]}
    emitters = {k: v for k, v in kinds._emitters().items() if k != "conv2d"}
    assert kinds.incomplete(emitters=emitters) == {"conv2d": ["emitter"]}


def test_a_table_entry_outside_the_catalogue_is_named():
    catalogue = {k: v for k, v in OUTPUT_TYPES.items() if k != "reshape"}
    missing = kinds.incomplete(catalogue)
    assert set(missing) == {"reshape"}
    tables = ("VJP_RULES", "KERNELS", "EMITTERS", "INPLACE_RULES")
    assert {f"in {t} but not in the catalogue" for t in tables} <= set(missing["reshape"])


def test_a_kind_with_a_vjp_and_a_reason_for_none_is_incomplete(monkeypatch):
    monkeypatch.setitem(kinds.NO_VJP, "conv2d", "no reason")
    assert kinds.incomplete() == {"conv2d": ["vjp (a rule, or a reason in NO_VJP: exactly one)"]}
