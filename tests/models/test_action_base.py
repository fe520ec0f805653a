"""The Action Base table: agents, aliases, did-you-mean errors, rules as data, user aliases."""

import json

import pytest

from models.action_base import ActionBase, default_action_base, load_action_base
from models.errors import ConfigError, UnknownAgentError


@pytest.fixture(scope="module")
def ab() -> ActionBase:
    return default_action_base()


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("THP", "Pirarubicin"),
        ("thp", "Pirarubicin"),
        ("Pirarubicin", "Pirarubicin"),
        ("Adasone", "Idarubicin"),
        ("ADM", "Doxorubicin"),
        ("Adriamycin", "Doxorubicin"),
        ("MMC", "Mitomycin"),
        ("HCPT", "Hydroxycamptothecin"),
        ("DDP", "Cisplatin"),
        ("L-OHP", "Oxaliplatin"),
        ("l ohp", "Oxaliplatin"),
        ("LC Beads", "Drug-eluting Beads"),
        ("DC Beads", "Drug-eluting Beads"),
        ("DEB", "Drug-eluting Beads"),
        ("drug eluting beads", "Drug-eluting Beads"),
        ("Gelfoam", "Gelatin Sponge"),
        ("gelatin sponge particles", "Gelatin Sponge"),
        ("ethanol", "Absolute Alcohol"),
        ("alcohol", "Absolute Alcohol"),
        ("polyvinyl alcohol", "PVA"),
        ("lipiodol", "Lipiodol"),
        ("Ethiodized Oil", "Lipiodol"),
        ("  nedaplatin ", "Nedaplatin"),
    ],
)
def test_alias_resolution(ab, alias, canonical):
    assert ab.agent(alias).name == canonical
    assert ab.canonical(alias) == canonical


def test_table_contents(ab):
    drugs = {a.name for a in ab.drugs}
    embolics = {a.name for a in ab.embolics}
    assert {"Raltitrexed", "Lobaplatin", "Oxaliplatin", "Cisplatin", "Nedaplatin", "Epirubicin", "Idarubicin",
            "Pirarubicin", "Doxorubicin", "Mitomycin", "Hydroxycamptothecin"} == drugs
    assert {"Lipiodol", "Gelatin Sponge", "PVA", "Absolute Alcohol", "NBCA", "Drug-eluting Beads"} == embolics
    # one agent, not two: THP is an alias of Pirarubicin
    assert "THP" not in ab.names
    assert set(ab.classes["platinum"]) == {"Lobaplatin", "Oxaliplatin", "Cisplatin", "Nedaplatin"}
    assert set(ab.classes["anthracycline"]) == {"Epirubicin", "Idarubicin", "Pirarubicin", "Doxorubicin"}
    # canonical order: every drug before every embolic
    kinds = [a.kind for a in ab.agents]
    assert kinds == sorted(kinds, key=lambda k: k != "drug")
    epi = ab.agent("Epirubicin")
    assert (epi.kind, epi.cls, epi.dose_min, epi.dose_max, epi.unit) == ("drug", "anthracycline", 10.0, 50.0, "mg")
    assert ab.agent("Gelatin Sponge").unit is None
    assert (ab.max_drugs, ab.max_embolics) == (2, 2)


def test_rules_are_data(ab):
    by_class = {r.cls: r for r in ab.class_rules}
    assert by_class["platinum"].max == 1 and by_class["platinum"].id == "R1"
    assert by_class["anthracycline"].max == 1 and by_class["anthracycline"].id == "R2"
    assert frozenset({"Absolute Alcohol", "PVA"}) in ab.conflicts
    assert frozenset({"PVA", "Gelatin Sponge"}) in ab.conflicts
    assert frozenset({"NBCA", "PVA"}) not in ab.conflicts
    assert set(ab.protocols) == {"cTACE", "DEB-TACE", "bland"}
    assert ab.protocols["cTACE"].requires_agents == ("Lipiodol",)
    assert "Lipiodol" in ab.protocols["DEB-TACE"].forbids_agents
    assert ab.protocols["bland"].max_drugs == 0


def test_unknown_agent_suggests_closest(ab):
    with pytest.raises(UnknownAgentError, match=r"Unknown agent 'Lobaplatni'.*Did you mean 'Lobaplatin'"):
        ab.agent("Lobaplatni")
    with pytest.raises(UnknownAgentError, match=r"Did you mean 'Pirarubicin'"):
        ab.agent("Pirarubicine")


def test_unknown_agent_without_close_match_lists_agents(ab):
    with pytest.raises(UnknownAgentError, match="Known agents: Raltitrexed") as info:
        ab.agent("Sorafenib")
    assert "Did you mean" not in str(info.value)


def test_default_is_cached():
    assert default_action_base() is default_action_base()


def test_extra_aliases_file(tmp_path):
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps({"Zhengda Tianqing Epi": "Epirubicin", "Lobaplatin-HN": "LBP"}))
    ab = load_action_base(extra_aliases_path=path)
    assert ab.canonical("zhengda tianqing epi") == "Epirubicin"
    assert ab.canonical("Lobaplatin-HN") == "Lobaplatin"  # the target may itself be an alias
    assert "Zhengda Tianqing Epi" in ab.agent("Epirubicin").aliases
    assert not default_action_base().is_known("Zhengda Tianqing Epi")  # the shared default is untouched


def test_extra_aliases_errors(tmp_path):
    bad_target = tmp_path / "a.json"
    bad_target.write_text(json.dumps({"Foo": "Epirubicn"}))
    with pytest.raises(UnknownAgentError, match=r"alias 'Foo' points to an unknown agent.*Did you mean 'Epirubicin'"):
        load_action_base(extra_aliases_path=bad_target)
    clash = tmp_path / "b.json"
    clash.write_text(json.dumps({"THP": "Epirubicin"}))
    with pytest.raises(ConfigError, match="conflicts with the table, where it means Pirarubicin"):
        load_action_base(extra_aliases_path=clash)
    not_json = tmp_path / "c.json"
    not_json.write_text("{nope")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_action_base(extra_aliases_path=not_json)
    with pytest.raises(ConfigError, match="does not exist"):
        load_action_base(extra_aliases_path=tmp_path / "missing.json")
    wrong_shape = tmp_path / "d.json"
    wrong_shape.write_text(json.dumps(["Epirubicin"]))
    with pytest.raises(ConfigError, match="mapping alias to agent"):
        load_action_base(extra_aliases_path=wrong_shape)


def test_malformed_table(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"agents": [{"name": "X"}]}))
    with pytest.raises(ConfigError, match="malformed"):
        load_action_base(table_path=path)
