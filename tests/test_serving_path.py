"""The ``path`` fixture (tests/helpers.py:ServingPath) cannot be fooled: a warm run whose
request took the general path, or a cold run whose request found a pooled connection, fails
its ``assert_served`` instead of testing one path twice."""

from __future__ import annotations

import pytest

from tests.helpers import ServingPath, http_get, run_gateway, run_upstream, simple_config


async def test_warm_run_served_by_the_general_path_is_caught() -> None:
    path = ServingPath("warm")
    async with run_upstream() as up, run_gateway(path.config(simple_config(up.url))) as gw:
        await path.prepare(gw)
        assert gw.worker.app is not None
        gw.worker.app.fast = False  # what a silent regression of the task-free path would do
        assert (await http_get(gw.url + "/x"))[0] == 200
        with pytest.raises(AssertionError, match="warm"):
            path.assert_served(1)
        gw.worker.app.fast = True
        assert (await http_get(gw.url + "/x"))[0] == 200
        assert path.served()["started"] == 1  # the second one did go task-free


async def test_cold_run_keeps_no_connection_and_a_warm_pool_is_caught() -> None:
    cold = ServingPath("cold")
    warm = ServingPath("warm")
    async with run_upstream() as up:
        async with run_gateway(cold.config(simple_config(up.url))) as gw:
            await cold.prepare(gw)
            for _ in range(3):  # no request of a cold run ever finds a pooled connection
                assert (await http_get(gw.url + "/x"))[0] == 200
            cold.assert_served(3)
        # a cold run on a warm config (a test that forgot path.config) is caught
        async with run_gateway(warm.config(simple_config(up.url))) as gw:
            await cold.prepare(gw)
            for _ in range(2):
                assert (await http_get(gw.url + "/x"))[0] == 200
            with pytest.raises(AssertionError, match="cold"):
                cold.assert_served(2)


def test_only_two_paths() -> None:
    assert repr(ServingPath("cold")) == "cold" and ServingPath("warm").warm
    with pytest.raises(AssertionError):
        ServingPath("lukewarm")
