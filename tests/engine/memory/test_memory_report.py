"""Reports: the ASCII timeline (rows, bar, legend, phases), the PNG, and the summary dict."""

import re

import pytest

from mcutrain.engine.memory import (
    Buffer,
    Plan,
    live_bytes_per_op,
    plan_greedy,
    plot_live_memory,
    summary,
    timeline_text,
)
from mcutrain.engine.memory import report
from mcutrain.engine.memory.report import CHARS, buffer_chars, phase_names

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROW = re.compile(r"^\s*(\d+)\s.*\|[^|]*\|")
K = 1024


def toy_training_plan():
    """A 9-op forward/backward/update schedule with every kind of buffer."""
    buffers = [
        Buffer("x", 12 * K, 0, 1), Buffer("conv1.out", 48 * K, 1, 2, "saved"),
        Buffer("conv1.mask", 2 * K, 1, 6, "mask"), Buffer("dw.out", 48 * K, 2, 3),
        Buffer("pw.out", 16 * K, 3, 4), Buffer("logits", 40, 4, 5),
        Buffer("dlogits", 40, 5, 6, "gradient"), Buffer("dpw", 16 * K, 6, 7, "gradient"),
        Buffer("pw.w", 8 * K, 0, 8, "weight-copy"), Buffer("dpw.w", 8 * K, 7, 8, "gradient"),
    ]
    names = ["conv0", "conv1", "dwconv", "pwconv", "fc", "loss", "fc.bwd", "pw.bwd", "pw.update"]
    return plan_greedy(buffers), names, {0: "forward", 5: "backward", 8: "update"}


def rows(text):
    return [line for line in text.splitlines() if ROW.match(line)]


def test_timeline_has_one_row_per_op_and_a_full_legend():
    plan, names, phases = toy_training_plan()
    text = timeline_text(plan, names, phases)
    body = rows(text)
    assert [int(ROW.match(r).group(1)) for r in body] == list(range(9))
    legend = text.split("legend:")[1]
    for b in plan.buffers:
        assert re.search(rf"^\s+\S\s+{re.escape(b.name)}\s", legend, re.M), b.name
    for name in names:
        assert name in text
    for phase in ("forward", "backward", "update"):
        assert phase in text


def test_timeline_marks_phase_starts_and_the_peak():
    plan, names, phases = toy_training_plan()
    body = rows(timeline_text(plan, names, phases))
    assert "forward" in body[0] and "backward" in body[5] and "update" in body[8]
    assert "backward" not in body[6]
    assert body[2].endswith("peak") and sum(r.endswith("peak") for r in body) == 1


def test_timeline_bars_have_the_requested_width():
    plan, names, phases = toy_training_plan()
    for width in (10, 60, 97):
        for line in rows(timeline_text(plan, names, phases, width=width)):
            assert len(line.split("|")[1]) == width


def test_timeline_bar_is_exact_when_one_char_is_one_byte():
    plan = plan_greedy([Buffer("a", 4, 0, 1), Buffer("b", 2, 1, 2), Buffer("c", 4, 2, 2)],
                       alignment=1)
    assert plan.offsets == {"a": 0, "c": 0, "b": 4} and plan.arena_bytes == 6
    bars = [line.split("|")[1] for line in rows(timeline_text(plan, width=6))]
    assert bars == ["AAAA..", "AAAABB", "CCCCBB"]


def test_timeline_shows_live_bytes_per_op():
    plan = plan_greedy([Buffer("a", 4, 0, 1), Buffer("b", 2, 1, 2)], alignment=1)
    text = timeline_text(plan)
    assert "live B" in text
    assert [int(r.split()[1]) for r in rows(text)] == [4, 6, 2]


def test_timeline_of_an_empty_plan():
    text = timeline_text(plan_greedy([]), op_names=["a", "b"])
    assert len(rows(text)) == 2 and "0 buffers over 2 ops" in text


def test_timeline_refuses_too_few_op_names_and_bad_phases():
    plan, names, _ = toy_training_plan()
    with pytest.raises(ValueError, match="live up to op 8"):
        timeline_text(plan, names[:5])
    with pytest.raises(ValueError, match="phase key 12"):
        timeline_text(plan, names, {0: "forward", 12: "update"})
    with pytest.raises(ValueError, match="width"):
        timeline_text(plan, names, width=0)


def test_phase_names_accept_starts_or_a_full_map():
    assert phase_names({1: "fwd", 3: "bwd"}, 5) == ["", "fwd", "fwd", "bwd", "bwd"]
    assert phase_names({i: p for i, p in enumerate("ffbbu")}, 5) == list("ffbbu")
    assert phase_names(None, 2) == ["", ""]


def test_buffer_chars_are_unique_for_small_plans():
    plan, _, _ = toy_training_plan()
    chars = buffer_chars(plan.buffers)
    assert len(set(chars.values())) == len(plan.buffers)
    assert not set(chars.values()) & set(".| ")


def test_buffer_chars_never_share_between_live_buffers_in_big_plans():
    buffers = [Buffer(f"t{i}", 4, i, i + 5) for i in range(3 * len(CHARS))]
    chars = buffer_chars(buffers)
    for i, a in enumerate(buffers):
        for b in buffers[i + 1:]:
            if a.lives_with(b):
                assert chars[a.name] != chars[b.name]
    text = timeline_text(plan_greedy(buffers))
    assert all(b.name in text for b in buffers)


def test_live_bytes_per_op_is_exported_from_report():
    assert report.live_bytes_per_op is live_bytes_per_op


def test_summary_of_the_toy_plan():
    plan, _, _ = toy_training_plan()
    s = summary(plan)
    assert s["arena_bytes"] == plan.arena_bytes == 106 * K
    assert s["lower_bound_bytes"] == 106 * K
    assert s["bump_arena_bytes"] == 158 * K + 2 * 40
    assert s["n_buffers"] == 10 and s["n_ops"] == 9 and s["alignment"] == 4
    assert s["peak_op"] == 2 and s["peak_live_bytes"] == 106 * K
    assert s["peak_bytes_by_kind"] == {"saved": 48 * K, "activation": 48 * K, "mask": 2 * K,
                                       "weight-copy": 8 * K}


def test_summary_of_an_empty_plan():
    s = summary(plan_greedy([]))
    assert s["arena_bytes"] == 0 and s["peak_op"] is None and s["peak_bytes_by_kind"] == {}


def test_plot_writes_a_png(tmp_path):
    plan, _, phases = toy_training_plan()
    path = plot_live_memory(plan, tmp_path / "live.png", 9, phases, title="toy")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert path.stat().st_size > 5000


def test_plot_without_phases_and_of_an_empty_plan(tmp_path):
    plan, _, _ = toy_training_plan()
    assert plot_live_memory(plan, tmp_path / "a.png", 12).read_bytes()[:8] == PNG_SIGNATURE
    empty = Plan({}, 0, ())
    assert plot_live_memory(empty, tmp_path / "b.png", 3).read_bytes()[:8] == PNG_SIGNATURE


def test_plot_refuses_a_schedule_shorter_than_the_plan(tmp_path):
    plan, _, _ = toy_training_plan()
    with pytest.raises(ValueError, match="live up to op 8"):
        plot_live_memory(plan, tmp_path / "c.png", 4)
