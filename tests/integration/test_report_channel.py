"""The report channel on the embedded Ray: what a sender in another Ray process puts arrives in the
driver in order, across batches, with NaN kept; what was taken is deleted from the GCS, and close
deletes what was never taken."""

from __future__ import annotations

import math

import pytest

from rayloom.train.report_channel import NAMESPACE, ReportChannel

pytestmark = pytest.mark.integration


def _entries(channel: ReportChannel) -> list[bytes]:
    from ray.experimental.internal_kv import _internal_kv_list

    return _internal_kv_list(f"train-reports/{channel.id}/", namespace=NAMESPACE)


def test_reports_from_another_process_arrive_in_order_and_leave_nothing_behind(ray_local):
    @ray_local.remote(num_cpus=0)
    class Sender:  # stands in for Ray Train's controller, which holds the callback's copy
        def __init__(self, channel):
            self.channel = channel

        def send(self, items):
            for item in items:
                self.channel.put(item)

    channel = ReportChannel()
    sender = Sender.remote(channel)
    assert channel.take() == []
    ray_local.get(sender.send.remote([("metrics", {"step": 1, "grad_norm": float("nan")}, None),
                                      ("metrics", {"step": 2}, "/runs/r/checkpoint_00000002")]))
    first = channel.take()
    assert [(kind, m["step"], ckpt) for kind, m, ckpt in first] == [("metrics", 1, None),
                                                                     ("metrics", 2, "/runs/r/checkpoint_00000002")]
    assert math.isnan(first[0][1]["grad_norm"])
    assert channel.take() == [] and _entries(channel) == []  # taken entries are gone from the GCS

    ray_local.get(sender.send.remote([("failure", "RuntimeError: boom", None)]))
    assert channel.take() == [("failure", "RuntimeError: boom", None)]  # the numbering carries on

    ray_local.get(sender.send.remote([("metrics", {"step": 3}, None)]))
    assert len(_entries(channel)) == 1
    channel.close()  # the run ended before the driver read it
    assert _entries(channel) == []
    ray_local.kill(sender)


def test_two_channels_do_not_see_each_other(ray_local):
    a, b = ReportChannel(), ReportChannel()
    a.put(("metrics", {"step": 1}, None))
    assert b.take() == [] and a.take() == [("metrics", {"step": 1}, None)]
    a.close()
    b.close()
