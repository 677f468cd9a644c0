"""The simulator's figure names: one catalogue (``simulator.FIGURE_NAMES``, ``name_of``)
that the console and ``siyu insight simulate`` both show, so a figure reads the same in
each and a figure the simulator starts to report cannot reach a table without a name."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime

from siyu.core import clock
from siyu.core.text import Text
from siyu.insight import simulator
from siyu.insight.simulator import Figures, PackCost, Simulation, name_of
from siyu.insight.simulator_cli import _metric


def figures(programme: str) -> Figures:
    """A column with every field filled: a figure in each dict and list, so that every kind
    of row ``Simulation.rows`` can make is made."""
    values: dict[str, typing.Any] = {}
    for f in dataclasses.fields(Figures):
        kind = typing.get_type_hints(Figures)[f.name]
        if kind is str:
            values[f.name] = programme
        elif kind is int:
            values[f.name] = 7
        elif f.name == "benefit_packs":
            values[f.name] = [PackCost("birthday_gift", "birthday", "V2", 3, 1500)]
        elif f.name == "paid_eligible":
            values[f.name] = {"super": 4}
        else:
            values[f.name] = {"V1": 5, "V2": 2}
    return Figures(**values)


def simulation() -> Simulation:
    return Simulation(
        start=None,
        end=datetime(2026, 11, 23, tzinfo=clock.UTC),
        sample=None,
        estimate=False,
        members=7,
        orders=9,
        baseline_version_id=1,
        baseline=figures("in force"),
        draft=figures("draft"),
        levels=["V1", "V2"],
        coupon_values=[],
        notes=[],
    )


def test_every_figure_the_simulator_reports_has_a_name() -> None:
    rows = simulation().rows()
    assert {r.section for r in rows} >= {"tiers", "upgrades", "points", "benefits", "paid"}
    unnamed = [r.metric for r in rows if r.section != "tiers" and name_of(r.metric) is None]
    assert unnamed == []
    # A level code names itself (the tier distribution's rows).
    assert [r.metric for r in rows if r.section == "tiers"] == ["V1", "V2"]
    assert name_of("V1") is None


def test_the_catalogue_names_figures_the_simulator_has_in_their_units() -> None:
    fields = [name for name, _, _, _ in simulator.FIGURE_NAMES]
    assert len(fields) == len(set(fields))
    numbers = {f.name for f in dataclasses.fields(Figures) if f.type in ("int", int)}
    assert set(fields) <= numbers
    units = {r.metric: r.unit for r in simulation().rows()}
    for name, zh, en, unit in simulator.FIGURE_NAMES:
        assert zh and en and zh != en
        assert units[name] == unit, name
        assert name_of(name) == Text(zh, en)
    # Every figure the rows report by field is named (none is left to the console alone).
    assert set(simulator.POINT_ROWS) | {"growth_issued", "benefit_cost_fen"} == set(fields)


def test_labels_around_a_code_keep_the_code() -> None:
    assert name_of("to V2") == Text("升级至 V2", "Upgraded to V2")
    assert name_of("from V3") == Text("降级自 V3", "Downgraded from V3")
    assert name_of("eligible for super") == Text("符合 super 开通条件", "Eligible for super")
    assert name_of("birthday_gift @ V2 packs") == Text(
        "birthday_gift @ V2 礼包数", "birthday_gift @ V2 packs"
    )
    assert name_of("birthday_gift @ V2 cost") == Text(
        "birthday_gift @ V2 成本（元）", "birthday_gift @ V2 cost (yuan)"
    )
    assert name_of("something new") is None


def test_the_cli_prints_the_chinese_then_the_english() -> None:
    assert _metric("points_orders") == "其中：订单积分 of which for orders"
    assert _metric("liability_fen") == "积分负债（元） Points liability (yuan)"
    assert _metric("to V2") == "升级至 V2 Upgraded to V2"
    assert _metric("V1") == "V1"
