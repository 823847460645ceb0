"""The RayService's Serve config builds rayloom's app with Ray Serve LLM's own config models (it
loads vLLM's Python package and Ray Serve, hence integration)."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO_ROOT

pytestmark = pytest.mark.integration


def test_rayservice_args_build_ray_serve_llm_configs():
    from rayloom.serve.app import build_llm_config, config_from_args
    from rayloom.serve.deployment_plan import ServePlan
    from rayloom.serve.limits import RequestLimits

    service = yaml.safe_load((REPO_ROOT / "cluster" / "kuberay" / "rayservice.yaml").read_text())
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "rayloom.serve.app:app_builder"
    cfg = config_from_args(app["args"])
    # The plan the cluster makes (plan_serving there reads the model's config.json from S3, which
    # this machine cannot reach): the S3 source goes to Ray Serve LLM as is.
    source = cfg.serve.model_path
    assert source == "s3://rayloom-data/runs/export/final"
    plan = ServePlan(model_id=cfg.serve.model_id, model_source=source, tokenizer_source=source,
                     max_model_len=cfg.serve.max_model_len, adapters={},
                     limits=RequestLimits.from_config(cfg.serve, cfg.serve.max_model_len), cache_dir="/tmp/unused")
    llm = build_llm_config(cfg.serve, plan)
    assert llm.accelerator_type == "A10G"
    assert llm.placement_group_config["bundle_per_worker"]["GPU"] == 1
    scaling = llm.deployment_config["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]
