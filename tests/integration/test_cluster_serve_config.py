"""The RayService's Serve config is accepted by Ray Serve LLM's own config models (it loads vLLM's
Python package, hence integration)."""

from __future__ import annotations

import pytest
import yaml
from tests_helpers import REPO_ROOT

pytestmark = pytest.mark.integration


def test_rayservice_llm_configs_parse_as_ray_serve_llm_configs():
    from ray.serve.llm import LLMServingArgs

    service = yaml.safe_load((REPO_ROOT / "cluster" / "kuberay" / "rayservice.yaml").read_text())
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    args = LLMServingArgs.model_validate(app["args"])
    [llm] = args.llm_configs
    assert llm.accelerator_type == "A10G"
    assert llm.model_loading_config.model_source.bucket_uri.startswith("s3://")
    scaling = llm.deployment_config["autoscaling_config"]
    assert 1 <= scaling["min_replicas"] <= scaling["max_replicas"]
