"""Static checks of the cluster configs: the launcher YAMLs pass Ray's own schema, the KubeRay
manifests keep the rules that matter, rendered files are up to date, the node image is sound."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import hcl2
import pytest
import yaml
from helpers import REPO_ROOT

from rayloom.cluster import launcher
from rayloom.cluster.kuberay import render_rayservice
from rayloom.config import compose
from rayloom.errors import UserError
from rayloom.runtime import SECRET_ENV
from rayloom.serve.serve_config import render_serve_config

AWS_YAML = REPO_ROOT / "cluster" / "aws-gpu.yaml"
FAKE_YAML = REPO_ROOT / "cluster" / "local-fake-gpu.yaml"
KUBERAY = REPO_ROOT / "cluster" / "kuberay"
GPU_TYPES = {"A10G", "H100", "H200"}


def _accelerators(resources: dict) -> set[str]:
    return {key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:")}


def _terraform_outputs() -> set[str]:
    with open(REPO_ROOT / "terraform" / "envs" / "aws-gpu" / "outputs.tf") as handle:
        parsed = hcl2.load(handle)
    return {name.strip("\"") for block in parsed["output"] for name in block}


def _fake_terraform_outputs() -> dict:
    values = {name: f"fake-{name}" for name in _terraform_outputs()}
    values.update(region="us-west-2", availability_zones_csv="us-west-2a,us-west-2b",
                  private_subnet_ids=["subnet-0a", "subnet-0b"], bastion_public_ip="203.0.113.10")
    return {name: {"sensitive": False, "type": "string", "value": value} for name, value in values.items()}


# --- Ray cluster launcher -------------------------------------------------------------------------

def test_aws_config_passes_rays_schema_before_and_after_rendering():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = launcher.load_yaml(AWS_YAML)
    launcher.validate_launcher_config(raw, str(AWS_YAML))
    rendered = launcher.render_from_terraform(raw, _fake_terraform_outputs())
    assert not launcher.placeholders(rendered)
    # What `ray up` does first: merge Ray's AWS defaults, then validate the result.
    validate_config(prepare_config(rendered))
    assert rendered["available_node_types"]["gpu.h100.train"]["node_config"]["SubnetIds"] == ["subnet-0a", "subnet-0b"]
    assert "RAYLOOM_S3_ROOT=fake-s3_root" in " ".join(rendered["docker"]["run_options"])


def test_aws_config_shape():
    config = launcher.load_yaml(AWS_YAML)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head must not take workloads"
    workers = {name: spec for name, spec in types.items() if name != config["head_node_type"]}
    assert set().union(*(_accelerators(w["resources"]) for w in workers.values())) == GPU_TYPES
    for name, spec in workers.items():
        assert spec["resources"]["GPU"] >= 1 and len(_accelerators(spec["resources"])) == 1, name
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= config["max_workers"], name
        assert spec["min_workers"] == 0, f"{name}: GPU nodes scale from zero"
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["provider"]["use_internal_ips"] is True
    for name, spec in types.items():
        node = spec["node_config"]
        assert node["MetadataOptions"]["HttpTokens"] == "required", f"{name}: IMDSv2 only"
        assert all(d["Ebs"]["Encrypted"] for d in node["BlockDeviceMappings"]), name
        assert "IamInstanceProfile" in node and "SubnetIds" in node, name
    assert config["docker"]["image"].endswith(":0.1.0")
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2


def test_every_aws_placeholder_is_a_terraform_output():
    assert launcher.placeholders(launcher.load_yaml(AWS_YAML)) <= _terraform_outputs()


def test_rendering_needs_every_output_and_never_copies_sensitive_ones():
    outputs = _fake_terraform_outputs()
    outputs["gpu_ami_id"]["sensitive"] = True
    with pytest.raises(UserError, match="gpu_ami_id"):
        launcher.render_from_terraform(launcher.load_yaml(AWS_YAML), outputs)


def test_render_aws_command(tmp_path):
    from rayloom.cluster import cluster_main

    tf = tmp_path / "tf.json"
    tf.write_text(json.dumps(_fake_terraform_outputs()))
    out = tmp_path / "aws.yaml"
    assert cluster_main(["render", "aws", "--terraform-output", str(tf), "-o", str(out)]) == 0
    launcher.validate_launcher_config(yaml.safe_load(out.read_text()))
    assert "{{tf." not in out.read_text()


def test_local_fake_config_passes_rays_schema_and_offers_fake_gpus():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = launcher.load_yaml(FAKE_YAML)
    rendered = launcher.render_local_fake(config, gcs_address="10.0.0.2:46379", head_num_cpus=3,
                                          idle_timeout_minutes=0.1)
    validate_config(prepare_config(rendered))
    assert rendered["provider"]["gcs_address"] == "10.0.0.2:46379"
    assert rendered["provider"]["module"].endswith("fake_multi_node.node_provider.FakeMultiNodeProvider")
    assert rendered["available_node_types"]["ray.head.default"]["resources"]["CPU"] == 3
    assert rendered["idle_timeout_minutes"] == 0.1
    gpu_types = [t for t in rendered["available_node_types"].values() if t["resources"].get("GPU")]
    assert set().union(*(_accelerators(t["resources"]) for t in gpu_types)) == GPU_TYPES
    assert all(t["min_workers"] == 0 for t in gpu_types)


def test_local_fake_head_runs_autoscaler_v2_as_the_fake_provider_expects():
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    from rayloom.cluster import local_fake

    # v2 replaces a dead fake node (v1 leaves it "uninitialized" forever); it needs the head's ids.
    assert local_fake.FAKE_ENV["RAY_enable_autoscaler_v2"] == "1"
    assert local_fake.FAKE_ENV["RAY_CLOUD_INSTANCE_ID"] == FAKE_HEAD_NODE_ID == local_fake.FAKE_HEAD_NODE_ID
    assert local_fake.FAKE_ENV["RAY_OVERRIDE_NODE_ID_FOR_TESTING"] == FAKE_HEAD_NODE_ID


def test_schema_violations_name_the_place():
    config = launcher.load_yaml(FAKE_YAML)
    config["available_node_types"]["gpu.h100.train"]["resources"]["GPU"] = -1
    with pytest.raises(UserError, match="available_node_types/gpu.h100.train/resources/GPU"):
        launcher.validate_launcher_config(config)


# --- KubeRay ------------------------------------------------------------------------------------------

def _manifests() -> dict[str, list[dict]]:
    return {path.name: [d for d in yaml.safe_load_all(path.read_text()) if d] for path in sorted(KUBERAY.glob("*.yaml"))}


def _cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for name, docs in _manifests().items():
        for doc in docs:
            if doc["kind"] == "RayCluster":
                specs.append((name, doc["spec"]))
            elif doc["kind"] == "RayService":
                specs.append((name, doc["spec"]["rayClusterConfig"]))
            elif doc["kind"] == "RayJob":
                specs.append((name, doc["spec"]["rayClusterSpec"]))
    return specs


def test_kuberay_files_are_valid_yaml_with_the_three_kinds():
    kinds = {doc["kind"] for docs in _manifests().values() for doc in docs}
    assert {"RayCluster", "RayJob", "RayService"} <= kinds
    for docs in _manifests().values():
        for doc in docs:
            if doc["kind"].startswith("Ray"):
                assert doc["apiVersion"] == "ray.io/v1"


def test_kuberay_autoscaling_auth_and_no_public_dashboard():
    specs = _cluster_specs()
    assert len(specs) == 3
    for name, spec in specs:
        assert spec["enableInTreeAutoscaling"] is True, name
        assert spec["autoscalerOptions"]["version"] == "v2", name
        assert spec["authOptions"] == {"mode": "token", "secretName": "rayloom-ray-token"}, name
        head = spec["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", name
        assert head["rayStartParams"]["num-cpus"] == "0", name
    for docs in _manifests().values():
        for doc in docs:
            if doc["kind"] == "Ingress":  # only the TLS one in front of Serve, never the dashboard (8265)
                assert doc["spec"]["tls"], doc["metadata"]["name"]
                backends = [p["backend"]["service"] for r in doc["spec"]["rules"] for p in r["http"]["paths"]]
                assert all(b["name"].endswith("-serve-svc") and b["port"]["number"] == 8000 for b in backends)
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_kuberay_gpu_worker_groups():
    for name, spec in _cluster_specs():
        for group in spec["workerGroupSpecs"]:
            where = f"{name}:{group['groupName']}"
            assert 0 == group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
            assert group["maxReplicas"] >= 1, where
            pod = group["template"]["spec"]
            container = pod["containers"][0]
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            gpus = requests["nvidia.com/gpu"]
            assert gpus == limits["nvidia.com/gpu"] == group["rayStartParams"]["num-gpus"], where
            assert int(gpus) >= 1, where
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"], where
            assert _accelerators(json.loads(json.loads(group["rayStartParams"]["resources"]))) <= GPU_TYPES, where
            assert container["securityContext"]["runAsNonRoot"] is True, where


def test_kuberay_secrets_only_by_reference():
    for name, spec in _cluster_specs():
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for group in groups:
            for container in group["template"]["spec"]["containers"]:
                for var in container.get("env", []):
                    if var["name"] in SECRET_ENV:
                        assert "value" not in var and "secretKeyRef" in var["valueFrom"], (name, var["name"])


def test_kuberay_pools_go_where_they_belong():
    docs = _manifests()
    service = docs["rayservice.yaml"][0]["spec"]["rayClusterConfig"]
    job = docs["rayjob-train.yaml"][0]["spec"]
    pools = {g["template"]["metadata"]["labels"]["rayloom.io/pool"] for g in service["workerGroupSpecs"]}
    assert pools == {"serve"}
    assert {g["template"]["metadata"]["labels"]["rayloom.io/pool"] for g in job["rayClusterSpec"]["workerGroupSpecs"]} == {"train"}
    assert job["shutdownAfterJobFinishes"] is True
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "/app/jobs/train.py"] and "cluster.address=''" in argv


def _render_command(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    match = re.match(r"# Generated by: rayloom cluster render kuberay (.*)$", first)
    assert match, f"{path.name} has no generator header"
    return shlex.split(match.group(1))


@pytest.mark.parametrize("name", ["rayjob-train.yaml", "rayservice.yaml"])
def test_rendered_manifests_are_up_to_date(name, tmp_path):
    from rayloom.cluster.commands import render_kuberay_files

    overrides = _render_command(KUBERAY / name)
    render_kuberay_files(overrides, tmp_path)
    assert yaml.safe_load((tmp_path / name).read_text()) == yaml.safe_load((KUBERAY / name).read_text()), (
        f"cluster/kuberay/{name} is stale: rerun `rayloom cluster render kuberay {shlex.join(overrides)}`")


def test_rayservice_serve_config_is_what_rayloom_serve_writes_in_portable_form(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.setenv("RAYLOOM_CACHE_DIR", "/home/someone/.cache/rayloom")  # forwarded locally, never to a cluster
    overrides = _render_command(KUBERAY / "rayservice.yaml")
    cfg = compose("serve", overrides)
    service = yaml.safe_load((KUBERAY / "rayservice.yaml").read_text())
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve_config == render_serve_config(cfg, for_cluster=True)
    ServeDeploySchema.model_validate(serve_config)  # Ray Serve's own config schema
    [app] = serve_config["applications"]
    assert app["import_path"] == "rayloom.serve.app:app_builder"  # rayloom's auth + limits, not a bare app
    assert "runtime_env" not in app and serve_config["http_options"]["host"] == "0.0.0.0"
    assert "RAYLOOM_CACHE_DIR" in str(render_serve_config(cfg)), "the local form does forward it"
    serve = app["args"]["serve"]
    assert (serve["min_replicas"], serve["max_replicas"]) == (cfg.serve.min_replicas, cfg.serve.max_replicas)
    assert serve["model_path"].startswith("s3://") and serve["accelerator_type"] == "A10G"
    assert serve["require_api_key"] and serve["api_key_env"] == "RAYLOOM_API_KEY"


def test_pods_get_the_api_key_by_reference():
    text = (KUBERAY / "raycluster.yaml").read_text()
    assert "key: RAYLOOM_API_KEY" in text and "secretKeyRef" in text


def test_rayservice_needs_a_model_every_node_can_read(tmp_path):
    render_rayservice(compose("serve", ["model=tiny"]))  # a preset is rebuilt from its config on the node
    with pytest.raises(UserError, match="serve.model_path"):
        render_rayservice(compose("serve", ["model=tiny", f"serve.model_path={tmp_path}"]))


# --- node image and presets ----------------------------------------------------------------------------

def test_dockerfile_builds_the_gpu_stack_as_a_non_root_user():
    text = (REPO_ROOT / "cluster" / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert any(f.startswith("nvidia/cuda:") for f in froms)
    assert all(":" in f and not f.endswith(":latest") for f in froms), froms
    assert "requirements/gpu.lock" in text and "--no-deps" in text
    assert "pip install --no-deps -e ." in text, "editable, so conf/ and jobs/ sit beside the package"
    assert re.search(r"^WORKDIR /app$", text, flags=re.M)
    assert re.search(r"^USER ray$", text, flags=re.M)
    ignore = (REPO_ROOT / "cluster" / "Dockerfile.dockerignore").read_text()
    assert "!requirements/gpu.lock" in ignore and ".venv" not in ignore.replace("**", "")


@pytest.mark.parametrize("preset", ["aws", "kuberay", "remote"])
def test_cluster_presets_compose(preset, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = compose("run", [f"cluster={preset}"])
    assert cfg.cluster.address == "http://127.0.0.1:8265"


def test_the_serve_ingress_terminates_tls_in_front_of_the_rayservice():
    """docs/serving.md "TLS": the example Ingress serves HTTPS and forwards to KubeRay's serve Service
    ("<RayService name>-serve-svc") on the port the RayService's Serve listens on."""
    ingress = _manifests()["serve-ingress.yaml"][0]
    service = _manifests()["rayservice.yaml"][0]
    assert ingress["kind"] == "Ingress" and ingress["apiVersion"] == "networking.k8s.io/v1"
    tls = ingress["spec"]["tls"]
    assert tls and tls[0]["secretName"] and tls[0]["hosts"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == set(tls[0]["hosts"])
    serve_port = yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == f"{service['metadata']['name']}-serve-svc"
            assert backend["port"]["number"] == serve_port
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "300"
