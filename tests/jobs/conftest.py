"""One local head (2 CPUs, dashboard + client server on 127.0.0.1, token auth on) for the job and notebook
tests: a head costs ~35 s to start and stop on a 2-core machine. The autoscaling tests start their own."""

from __future__ import annotations

import pytest

from cluster_head import start_head


@pytest.fixture(scope="package")
def head():
    head = start_head(num_cpus=2)
    yield head
    head.stop()
