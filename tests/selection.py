"""Markers by what a test starts, so ``make check`` can deselect them (``-m "not server and not browser"``),
and pytest-xdist groups by what tests share (``group_by_shared_fixture``).

A test gets ``server`` when it starts a real server process (gunicorn, redis-server, PostgreSQL,
nginx) and ``browser`` when it drives a browser, without anyone writing the marker: the test's code,
its fixtures' code and the module-level helpers they call (followed ``DEPTH`` calls deep) are
looked at for the names of the functions that start one (``SERVER_STARTERS``, ``BROWSER_STARTERS``).
The names are read from the compiled code (``co_names``, nested functions included), never run.

It is a net, not a proof: a server started through a path this does not follow is caught when
``make check`` runs, as ``INGEST_TEST_NO_SERVERS=1`` makes every starter in ``tests/servers.py``
and ``tests/services.py`` refuse (``refuse_servers``) and so fail that test, naming the marker.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Iterator
from typing import Any

#: Callables that start a server process (tests/servers.py, tests/services.py, the nginx tests).
SERVER_STARTERS = frozenset({"gunicorn", "redis_server", "postgres_server", "nginx_binary"})
#: Callables that start a browser (tests/browser_support.py, Playwright).
BROWSER_STARTERS = frozenset({"sync_playwright", "require_chromium", "SignedInBrowser"})
#: The database parameter of tests that run on a real PostgreSQL (``database_url``, ``first_release_url``).
POSTGRESQL = "postgresql"
#: Fixture scopes whose one value several tests of a module share.
SHARED_SCOPES = frozenset({"module", "class", "package"})
DEPTH = 3  # helper calls followed from a test or fixture, within the tests package
NO_SERVERS = "INGEST_TEST_NO_SERVERS"


def mark_by_what_starts(item: Any) -> None:
    """Add ``server``/``browser`` to the pytest ``item`` when its code reaches a starter (module doc)."""
    import pytest  # here: tests/servers.py (and so the benches) import this module without pytest

    names: set[str] = set()
    for function in _functions_of(item):
        names |= _names_reached(function, DEPTH, set())
    callspec = getattr(item, "callspec", None)
    if callspec is not None and POSTGRESQL in callspec.params.values():
        names.add("postgres_server")  # a fixture parametrized by database asks for the cluster by name
    if names & SERVER_STARTERS and not item.get_closest_marker("server"):
        item.add_marker(pytest.mark.server)
    if names & BROWSER_STARTERS and not item.get_closest_marker("browser"):
        item.add_marker(pytest.mark.browser)


def group_by_shared_fixture(item: Any) -> None:
    """Send the tests of a module that share one of its module-scoped fixtures (a server, a corpus
    ingest) to one pytest-xdist worker (``--dist loadgroup``): else each worker would set it up again."""
    import pytest

    info = getattr(item, "_fixtureinfo", None)
    module = item.nodeid.split("::", 1)[0]
    fixtures = info.name2fixturedefs if info else {}
    for definitions in fixtures.values():
        for definition in definitions:
            # An autouse one is a setting (e.g. a model loaded once), cheap to repeat on each worker.
            shared = definition.scope in SHARED_SCOPES and not getattr(definition, "_autouse", False)
            if shared and definition.baseid == module:
                item.add_marker(pytest.mark.xdist_group("::".join([module, *_shared_params(item, fixtures)])))
                return


def _shared_params(item: Any, fixtures: dict[str, Any]) -> list[str]:
    """The values of the item's parametrized shared fixtures (e.g. test_engines' ``engine``): each
    value sets up its own fixtures, so each is a group of its own that can run beside the others."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return [str(value) for name, value in sorted(params.items())
            if any(d.scope in SHARED_SCOPES for d in fixtures.get(name, ()))]


def refuse_servers(what: str) -> None:
    """Raise when servers are off (``make check``): a test starting ``what`` lacks its marker."""
    if os.environ.get(NO_SERVERS) == "1":
        raise RuntimeError(f"{what} started with {NO_SERVERS}=1 (make check): mark the test "
                           "@pytest.mark.server, or name the starter in tests/selection.py")


def _functions_of(item: Any) -> Iterator[Callable]:
    function = getattr(item, "function", None)
    if function is not None:
        yield function
    info = getattr(item, "_fixtureinfo", None)
    for definitions in (info.name2fixturedefs.values() if info else ()):
        for definition in definitions:
            yield definition.func


def _names_reached(function: Callable, depth: int, seen: set[int]) -> set[str]:
    """The global names ``function`` (and, ``depth`` calls deep, the functions it names) refers to."""
    function = getattr(function, "__wrapped__", function)
    code = getattr(function, "__code__", None)
    if code is None or id(code) in seen:
        return set()
    seen.add(id(code))
    names = set(_code_names(code))
    if depth > 0:
        module_globals = getattr(function, "__globals__", {})
        for name in list(names):
            helper = module_globals.get(name)
            if not getattr(helper, "__module__", "").startswith("tests."):
                continue  # the app's own code starts no test server
            if isinstance(helper, types.FunctionType):
                names |= _names_reached(helper, depth - 1, seen)
            elif isinstance(helper, type):
                for member in vars(helper).values():
                    if isinstance(member, types.FunctionType):
                        names |= _names_reached(member, depth - 1, seen)
    return names


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_names(constant)
