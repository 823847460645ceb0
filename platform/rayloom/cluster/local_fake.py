"""The local autoscaling cluster with fake GPU nodes (`rayloom cluster up --local-fake`).

Ray's autoscaler runs on the local head over cluster/local-fake-gpu.yaml: its `fake_multinode`
provider starts "nodes" with any resources (GPUs of a given accelerator type) as local processes
when a task asks for them, and removes them once idle. `probe_gpu` shows both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rayloom.cluster import launcher
from rayloom.cluster.head import HeadState
from rayloom.waiting import WaitTimeout, wait_until

# Ray's id for the fake head node (the provider's default head_node_id); a constant, so importing
# Ray's node provider module (and Ray with it) is not needed to build the environment.
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
# The head's environment: Ray's fake provider on, an autoscaler that reacts within a second, and
# autoscaler v2 (as Ray's own AutoscalingCluster(autoscaler_v2=True) sets it up). v1 never replaces
# a fake node that died: the provider keeps it tagged "uninitialized", v1 counts it as still
# launching, and the demand it served stays unmet. v2 reconciles against the GCS's node states: a
# dead node's instance is terminated and a new one launched, as on a cloud after a spot reclaim.
FAKE_ENV = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_enable_autoscaler_v2": "1",
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}


def write_autoscaling_config(state_dir: Path, *, port: int, head_num_cpus: int, config: str = "",
                             idle_timeout_minutes: float | None = None) -> Path:
    """Render the fake-GPU launcher config for a head on `port` and write it into `state_dir`."""
    # Ray loads in about a second: only `cluster up --local-fake` pays for it.
    from ray.util import get_node_ip_address

    source = launcher.load_yaml(config or launcher.shipped_config(launcher.LOCAL_FAKE_YAML))
    rendered = launcher.render_local_fake(source, gcs_address=f"{get_node_ip_address()}:{port}",
                                          head_num_cpus=head_num_cpus, idle_timeout_minutes=idle_timeout_minutes)
    launcher.validate_launcher_config(rendered, "the local fake-GPU config")
    state_dir.mkdir(parents=True, exist_ok=True)
    return launcher.write_yaml(rendered, state_dir / "autoscaling.yaml")


def accelerator_of(resources: dict) -> str:
    kinds = sorted(key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:"))
    return ",".join(kinds) or "-"


def probe_gpu(state: HeadState, num_gpus: float, accelerator_type: str, timeout_s: float,
              wait_idle_s: float) -> dict:
    """Run one task that needs GPUs and report where it ran; optionally wait until that node is
    removed for being idle. On a fake-GPU cluster this shows a scale-up and a scale-down."""
    # Before importing ray: it reads the auth mode once, when its core module loads.
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state.token_path})
    import ray

    ray.init(address=state.gcs_address, logging_level="WARNING", log_to_driver=False)
    try:
        before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}

        @ray.remote(num_cpus=1, num_gpus=num_gpus, accelerator_type=accelerator_type or None)
        def where() -> tuple[str, list]:
            return ray.get_runtime_context().get_node_id(), [str(g) for g in ray.get_gpu_ids()]

        start = time.monotonic()
        node_id, gpu_ids = ray.get(where.remote(), timeout=timeout_s)
        result = {"node_id": node_id, "gpu_ids": gpu_ids, "new_node": node_id not in before,
                  "scheduled_after_s": round(time.monotonic() - start, 1)}
        node = next(n for n in ray.nodes() if n["NodeID"] == node_id)
        result["accelerator"] = accelerator_of(node["Resources"])
        result["node_gpus"] = node["Resources"].get("GPU", 0)
        if wait_idle_s > 0:
            start = time.monotonic()

            def removed() -> bool:
                return not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())

            try:
                wait_until(removed, wait_idle_s, interval_s=1.0, message="the idle node's removal")
                result["removed_when_idle"] = True
            except WaitTimeout:
                result["removed_when_idle"] = False
            result["removed_after_s"] = round(time.monotonic() - start, 1)
        return result
    finally:
        ray.shutdown()
