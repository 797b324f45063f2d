"""The groups file's checks (no Airflow needed): what fails a DAG run before anything loads."""

from __future__ import annotations

import json
from types import ModuleType

import pytest


def test_a_valid_file_gives_its_groups(groups_module: ModuleType) -> None:
    text = json.dumps({"eu": ["1", "2"], "us_west-2": ["3"]})
    assert groups_module.parse_groups(text) == {"eu": ["1", "2"], "us_west-2": ["3"]}


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ({"eu": ["1", "2"], "us": ["3", "2"]}, "account 2 is in group 'us' and in 'eu'"),
        ({"eu": ["1", "1"]}, "account 1 is in group 'eu' twice"),
        ({"eu": [str(i) for i in range(51)]}, "51 accounts, allowed 1 to 50"),
        ({"eu": []}, "0 accounts"),
        ({"eu": [17841400000000001]}, "as strings"),
        ({"eu": ["17841400000000001x"]}, "is not an account id"),
        ({"eu west": ["1"]}, "group name 'eu west'"),
        ({"reconcile": ["1"]}, "the reconciliation's state id suffix"),
        ({}, "must be a JSON object"),
    ],
)
def test_a_bad_file_fails_naming_the_problem(
    groups_module: ModuleType, groups: dict, message: str
) -> None:
    with pytest.raises(groups_module.GroupsError, match=message.replace("(", r"\(")):
        groups_module.parse_groups(json.dumps(groups))


def test_coverage_names_accounts_in_no_group_and_those_the_key_cannot_see(
    groups_module: ModuleType,
) -> None:
    found = groups_module.coverage({"a": ["1", "2"], "b": ["3"]}, ["2", "3", "4", "10"])
    assert found.unassigned == ["4", "10"]
    assert found.not_visible == ["1"]


def test_split_accounts_cuts_groups_of_at_most_the_size(groups_module: ModuleType) -> None:
    ids = [str(100 + i) for i in range(105)]
    groups = groups_module.split_accounts(ids, 50)
    assert [len(v) for v in groups.values()] == [50, 50, 5]
    assert list(groups) == ["group-01", "group-02", "group-03"]
    assert sorted(a for v in groups.values() for a in v) == sorted(ids)
