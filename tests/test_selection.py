"""The test harness's own promise (tests/selection.py): the tests that share a module's servers or
browsers run on one pytest-xdist worker, so those are set up once, not once per test."""

from __future__ import annotations

import pytest


def test_grouped_tests_reach_xdist_as_groups(request: pytest.FixtureRequest) -> None:
    """Under ``--dist loadgroup`` every item marked ``xdist_group`` carries its ``@group`` node-id
    suffix, which is all pytest-xdist's scheduler reads. With pytest 9.2 and pytest-xdist 3.8 the
    suffix silently does not take (pytest-xdist#1386): each test then rebuilt its module's servers
    and browsers on whichever worker it landed (three of test_engines' Firefox tests each started
    a gunicorn and a Firefox of their own: 43-48 s of setup each)."""
    if not getattr(request.config.option, "loadgroup", False):  # set by pytest-xdist in its workers only
        pytest.skip("not run under --dist loadgroup (make test and make check use it)")
    grouped = [item for item in request.session.items if item.get_closest_marker("xdist_group")]
    if not grouped:
        pytest.skip("no test sharing a module's fixture was selected")
    lost = [item.nodeid for item in grouped if "@" not in item.nodeid.rpartition("]")[2]]
    assert not lost, f"pytest-xdist did not group {len(lost)} tests, e.g. {lost[:3]} (requirements-dev.txt)"
