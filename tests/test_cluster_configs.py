"""Static checks of the deployment configs, against Ray's own schemas; no Ray cluster needed.

- cluster.yaml: the cluster launcher's schema (prepare_config + validate_config, the calls
  `ray up` makes before it contacts the cloud), node types, install step, GCS port.
- serve_config.yaml / serve_config.gpu.yaml: Serve's ServeDeploySchema (what `serve deploy`
  validates), builder args as Settings, deployment names, GPU requests, user_config keys.
- deploy/rayservice.yaml: serveConfigV2 is the GPU config's `applications`, GPU worker group.
- GPU totals: the Serve maxima fit the GPUs the cluster configs can scale to.
"""

from __future__ import annotations

import ast
import copy
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
SERVE_CPU = REPO / "serve_config.yaml"
SERVE_GPU = REPO / "serve_config.gpu.yaml"
RAYSERVICE = REPO / "deploy" / "rayservice.yaml"
SERVE_CONFIGS = [SERVE_CPU, SERVE_GPU]

# Where each deployment class lives (for its reconfigure source).
DEPLOYMENT_SOURCES = {
    "Ingress": REPO / "serve_app" / "app.py",
    "Transcriber": REPO / "deployments" / "replicas" / "transcriber.py",
    "Diarizer": REPO / "deployments" / "replicas" / "diarizer.py",
    "JobManager": REPO / "jobs" / "pipeline" / "manager.py",
}
REDIS_PORT = 6379


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def deployments(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Deployment entries by name (the app has one application)."""
    (app,) = config["applications"]
    return {d["name"]: d for d in app["deployments"]}


def num_gpus(deployment: dict[str, Any]) -> float:
    return float(deployment.get("ray_actor_options", {}).get("num_gpus", 0) or 0)


def reconfigure_keys(source: Path, class_name: str) -> set[str] | None:
    """String keys tested with `"key" in user_config` in class_name.reconfigure, or None."""
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "reconfigure":
                param = item.args.args[1].arg  # (self, user_config)
                return {
                    cmp.left.value
                    for cmp in ast.walk(item)
                    if isinstance(cmp, ast.Compare)
                    and isinstance(cmp.left, ast.Constant)
                    and isinstance(cmp.ops[0], ast.In)
                    and isinstance(cmp.comparators[0], ast.Name)
                    and cmp.comparators[0].id == param
                }
    return None


def start_commands(cluster: dict[str, Any]) -> list[str]:
    return [*cluster["head_start_ray_commands"], *cluster["worker_start_ray_commands"]]


# --- cluster.yaml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return load_yaml(CLUSTER_YAML)


@pytest.fixture(scope="module")
def prepared_cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    """cluster.yaml as `ray up` sees it: provider defaults filled, then schema-validated."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config reads the provider's packaged defaults.yaml (no cloud calls); the AWS
    # bootstrap that talks to EC2 comes later in `ray up` and is not run here.
    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)  # ray-schema.json via jsonschema + Ray's own cross-checks
    return prepared


def test_cluster_yaml_validates_against_ray_schema(prepared_cluster: dict[str, Any]) -> None:
    assert prepared_cluster["provider"]["type"] == "aws"
    assert prepared_cluster["head_node_type"] in prepared_cluster["available_node_types"]


def test_cluster_has_cpu_head_and_gpu_worker_pool(prepared_cluster: dict[str, Any]) -> None:
    types = prepared_cluster["available_node_types"]
    head = types[prepared_cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head must not offer GPUs"
    assert head["max_workers"] == 0
    gpu_types = {
        name: t
        for name, t in types.items()
        if name != prepared_cluster["head_node_type"] and t["resources"].get("GPU", 0) > 0
    }
    assert gpu_types, "need a GPU worker node type"
    for name, t in gpu_types.items():
        assert "min_workers" in t and "max_workers" in t, name
        assert 0 <= t["min_workers"] <= t["max_workers"], name
        assert t["max_workers"] >= 1, name
    # Written explicitly in cluster.yaml, not just filled in by prepare_config.
    raw_types = load_yaml(CLUSTER_YAML)["available_node_types"]
    for name in gpu_types:
        assert {"min_workers", "max_workers"} <= raw_types[name].keys(), name


def test_cluster_setup_syncs_repo_and_runs_install_script(cluster: dict[str, Any]) -> None:
    mounts = cluster["file_mounts"]
    assert "." in mounts.values(), "the repo must be synced to the nodes"
    remote = next(k for k, v in mounts.items() if v == ".")
    assert ".venv" in cluster.get("rsync_exclude", []), "never ship the local .venv"
    setup = cluster["setup_commands"]
    install = [c for c in setup if "bash scripts/install.sh" in c]
    assert install, "setup_commands must run the README's install step"
    assert all(f"cd {remote}" in c for c in install)


def test_cluster_commands_are_valid_bash(cluster: dict[str, Any]) -> None:
    keys = (
        "initialization_commands",
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    for key in keys:
        for command in cluster.get(key, []):
            result = subprocess.run(
                ["bash", "-n", "-c", command], capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"{key}: {command!r}: {result.stderr}"


def test_ray_gcs_port_is_not_redis_port(cluster: dict[str, Any]) -> None:
    for command in start_commands(cluster):
        assert not re.search(rf"--port[= ]{REDIS_PORT}\b", command), command
        assert not re.search(rf":{REDIS_PORT}\b", command), command
    head = " ".join(cluster["head_start_ray_commands"])
    match = re.search(r"ray start --head\b.*?--port[= ](\d+)", head)
    assert match, "the head must set its GCS port explicitly (Ray's default is 6379)"
    port = int(match.group(1))
    assert port != REDIS_PORT
    workers = " ".join(cluster["worker_start_ray_commands"])
    assert f"--address=$RAY_HEAD_IP:{port}" in workers, "workers must join the head's port"


def test_cluster_head_points_at_external_redis_and_deploys_gpu_config(
    cluster: dict[str, Any],
) -> None:
    head = " ".join(cluster["head_start_ray_commands"])
    assert "REDIS_URL" in head
    deploy = [c for c in cluster["head_start_ray_commands"] if "serve deploy" in c]
    assert deploy, "the head must bring up Serve"
    (command,) = deploy
    config = shlex.split(command.split("serve deploy", 1)[1])[0]
    assert config == SERVE_GPU.name
    assert (REPO / config).is_file()
    example = REPO / "deploy" / "cluster.env.example"
    assert re.search(r"^REDIS_URL=", example.read_text(), re.M), "document REDIS_URL"
    # serve_config.gpu.yaml binds 0.0.0.0: without keys the app would refuse to start.
    assert re.search(r"^SPEECH_API_KEYS=", example.read_text(), re.M), "document API keys"


# --- Serve configs --------------------------------------------------------------------


def serve_schema(path: Path):
    from ray.serve.schema import ServeDeploySchema

    return ServeDeploySchema.model_validate(load_yaml(path))


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_validates_against_serve_schema(path: Path) -> None:
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    schema = serve_schema(path)
    assert [app.name for app in schema.applications] == ["speech"]
    # Serve's models ignore unknown keys; a typo would be silently dropped, so check keys.
    config = load_yaml(path)
    assert config.keys() <= ServeDeploySchema.model_fields.keys()
    (app,) = config["applications"]
    assert app.keys() <= ServeApplicationSchema.model_fields.keys()
    for d in app["deployments"]:
        assert d.keys() <= DeploymentSchema.model_fields.keys(), d["name"]
        options = d.get("ray_actor_options", {})
        assert options.keys() <= RayActorOptionsSchema.model_fields.keys(), d["name"]
        if "autoscaling_config" in d:  # a plain dict to DeploymentSchema: validate it here
            assert d["autoscaling_config"].keys() <= AutoscalingConfig.model_fields.keys()
            AutoscalingConfig.model_validate(d["autoscaling_config"])


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_held_requests_leave_ingress_slots_free(path: Path) -> None:
    """Streams and waiting OpenAI calls never take every Ingress slot (issue 22 item 2), and
    a full queue is refused rather than unbounded."""
    from serve_app.settings import Settings

    config = load_yaml(path)
    (app,) = config["applications"]
    ingress = deployments(config)["Ingress"]
    settings = Settings.model_validate(app["args"])
    assert settings.max_held_requests < ingress["max_ongoing_requests"]
    assert ingress.get("max_queued_requests", -1) > 0


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_args_are_settings(path: Path) -> None:
    from deployments.models.model_store import BUNDLED_WHISPER_DIRS
    from serve_app.settings import Settings

    (app,) = load_yaml(path)["applications"]
    assert app["import_path"] == "serve_app.app:app_builder"
    settings = Settings.model_validate(app["args"])  # extra="forbid": unknown args fail
    for model in settings.whisper_models:
        if model not in BUNDLED_WHISPER_DIRS:
            # A hub model only loads with downloads allowed (or from a local directory).
            assert settings.allow_downloads or Path(model).is_absolute()


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_deployments_exist_in_app(path: Path) -> None:
    from ray.serve._private.build_app import build_app

    from deployments.replicas.transcriber import deployment_name
    from serve_app.app import app_builder
    from serve_app.settings import Settings

    (app,) = load_yaml(path)["applications"]
    built = build_app(app_builder(app["args"]), name=app["name"])  # binds; starts nothing
    app_deployments = {d.name for d in built.deployments}
    settings = Settings.model_validate(app["args"])
    models = {deployment_name(m, settings.whisper_model) for m in settings.whisper_models}
    assert app_deployments == set(DEPLOYMENT_SOURCES) | models
    # Every served model is sized in the file, not left to the class defaults.
    assert set(deployments(load_yaml(path))) == app_deployments


def test_deployment_classes_carry_no_numbers_the_configs_set() -> None:
    """Issue 21: sizing has one source. A decorator option that a config also sets would be
    a second default that silently applies to apps built from Python."""
    from deployments.replicas.diarizer import Diarizer
    from deployments.replicas.transcriber import Transcriber
    from jobs.pipeline.manager import JobManager
    from serve_app.app import Ingress

    set_by_configs: dict[str, set[str]] = {}
    for path in SERVE_CONFIGS:
        for name, d in deployments(load_yaml(path)).items():
            cls = "Transcriber" if name.startswith("Transcriber") else name
            set_by_configs.setdefault(cls, set()).update(k for k in d if k != "name")
    classes = {d.name: d for d in (Ingress, Transcriber, Diarizer, JobManager)}
    assert set(classes) == set(DEPLOYMENT_SOURCES) == set(set_by_configs)
    for name, d in classes.items():
        in_class = set(d._deployment_config.user_configured_option_names)
        if d.ray_actor_options != {"num_cpus": 1}:  # Serve's own default, not ours
            in_class.add("ray_actor_options")
        assert not in_class & set_by_configs[name], (name, in_class & set_by_configs[name])


def test_python_built_app_is_sized_by_serve_config() -> None:
    from ray.serve._private.build_app import build_app

    from serve_app.app import build_app as build
    from serve_app.settings import Settings

    settings = Settings(extra_whisper_models=["tiny.en"])
    built = {
        d.name: d
        for d in build_app(
            build(settings, diarizer={"max_ongoing_requests": 3}), name="x"
        ).deployments
    }
    want = deployments(load_yaml(SERVE_CPU))
    for name in ("Ingress", "JobManager", "Transcriber", "Transcriber-tiny-en"):
        assert (
            built[name].ray_actor_options["num_cpus"] == want[name]["ray_actor_options"]["num_cpus"]
        )
    assert built["Transcriber"].user_config == want["Transcriber"]["user_config"]
    assert built["Ingress"].max_ongoing_requests == want["Ingress"]["max_ongoing_requests"]
    assert built["Diarizer"].max_ongoing_requests == 3  # an override wins over the file
    assert (
        built["Diarizer"].ray_actor_options["num_cpus"]
        == want["Diarizer"]["ray_actor_options"]["num_cpus"]
    )


def test_cpu_serve_config_uses_no_gpus() -> None:
    for name, d in deployments(load_yaml(SERVE_CPU)).items():
        assert num_gpus(d) == 0, name


def test_gpu_serve_config_packs_fractional_gpus() -> None:
    ds = deployments(load_yaml(SERVE_GPU))
    assert 0 < num_gpus(ds["Transcriber"]) < 1
    assert 0 < num_gpus(ds["Diarizer"]) < 1
    assert num_gpus(ds["Ingress"]) == 0
    (app,) = load_yaml(SERVE_GPU)["applications"]
    assert app["args"]["device"] == "cuda"


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_user_config_keys_match_reconfigure(path: Path) -> None:
    for name, d in deployments(load_yaml(path)).items():
        cls = name.split("-")[0]  # Transcriber-tiny-en is a Transcriber
        understood = reconfigure_keys(DEPLOYMENT_SOURCES[cls], cls)
        if "user_config" not in d:
            continue
        assert understood is not None, f"{name} has user_config but no reconfigure"
        assert set(d["user_config"]) == understood, name


def test_transcriber_reconfigure_keys_are_found() -> None:
    """Guards the AST reader above: it must see the batch knobs reconfigure applies."""
    keys = reconfigure_keys(DEPLOYMENT_SOURCES["Transcriber"], "Transcriber")
    assert keys == {"max_batch_requests", "batch_wait_timeout_s", "window_batch_size"}


# --- deploy/rayservice.yaml -----------------------------------------------------------


@pytest.fixture(scope="module")
def rayservice() -> dict[str, Any]:
    return load_yaml(RAYSERVICE)


def test_rayservice_serve_config_matches_gpu_config(rayservice: dict[str, Any]) -> None:
    """serveConfigV2 is exactly the GPU file's `applications`, nothing more.

    Every key must agree (name, route_prefix, import_path, args, and per deployment its
    resources, autoscaling, max_ongoing_requests and user_config): anything that differs is
    drift. Cluster-specific values (REDIS_URL, SPEECH_STORAGE_DIR) come from the pods' env.
    Proxy/HTTP options are left to KubeRay, so serveConfigV2 holds only `applications`.
    """
    from ray.serve.schema import ServeDeploySchema

    assert rayservice["apiVersion"] == "ray.io/v1"
    assert rayservice["kind"] == "RayService"
    serve_v2 = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_v2)
    assert set(serve_v2) == {"applications"}
    assert serve_v2["applications"] == load_yaml(SERVE_GPU)["applications"]


def test_rayservice_supplies_api_keys(rayservice: dict[str, Any]) -> None:
    """The RayService exposes 0.0.0.0, so every Ray container must get SPEECH_API_KEYS."""
    text = RAYSERVICE.read_text()
    assert "name: SPEECH_API_KEYS" in text and "speech-api-keys" in text


def test_rayservice_groups(rayservice: dict[str, Any]) -> None:
    cluster = rayservice["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    port = head["rayStartParams"]["port"]
    assert int(port) != REDIS_PORT
    (head_container,) = head["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
    assert ports["gcs-server"] == int(port)
    assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {})

    (group,) = cluster["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in group["template"]["spec"]["containers"]:
        assert int(container["resources"]["requests"]["nvidia.com/gpu"]) >= 1
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1

    for container in [head_container, *group["template"]["spec"]["containers"]]:
        env = {e["name"]: e for e in container["env"]}
        assert "secretKeyRef" in env["REDIS_URL"]["valueFrom"], "REDIS_URL from a Secret"
        assert "SPEECH_STORAGE_DIR" in env


# --- capacity: Serve maxima vs. the GPUs the clusters can scale to ------------------------


def gpu_demand(bound: str) -> float:
    return sum(
        d["autoscaling_config"][bound] * num_gpus(d)
        for d in deployments(load_yaml(SERVE_GPU)).values()
        if "autoscaling_config" in d
    )


def test_serve_gpu_maxima_fit_launcher_cluster(prepared_cluster: dict[str, Any]) -> None:
    types = prepared_cluster["available_node_types"]
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    most = sum(t["max_workers"] * t["resources"]["GPU"] for t in gpu_types)
    least = sum(t["min_workers"] * t["resources"]["GPU"] for t in gpu_types)
    assert gpu_demand("max_replicas") <= most
    assert gpu_demand("min_replicas") <= least, "min_replicas should fit the always-on GPUs"


def test_serve_gpu_maxima_fit_rayservice(rayservice: dict[str, Any]) -> None:
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]

    def gpus(group: dict[str, Any]) -> int:
        return sum(
            int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
            for c in group["template"]["spec"]["containers"]
        )

    assert gpu_demand("max_replicas") <= sum(g["maxReplicas"] * gpus(g) for g in groups)
    assert gpu_demand("min_replicas") <= sum(g["minReplicas"] * gpus(g) for g in groups)
