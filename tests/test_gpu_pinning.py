"""GPU pinning with logical GPUs: each replica gets its own device and still runs on CPU."""

from pathlib import Path

import pytest

from deployments.core.schemas import TranscribeOptions
from tests.conftest import JFK_TEXT, wer
from tests.jobclient import replica_infos

pytestmark = [pytest.mark.ray, pytest.mark.models]


def _deploy_pinned(models_dir, name: str, num_gpus: float):
    from ray import serve

    from deployments.replicas.transcriber import Transcriber

    app = Transcriber.options(
        num_replicas=2,
        autoscaling_config=None,
        ray_actor_options={"num_cpus": 0.5, "num_gpus": num_gpus},
    ).bind(model="tiny.en", models_dir=str(models_dir))
    return serve.run(app, name=name, route_prefix=None)


def test_two_replicas_each_pinned_to_their_own_gpu(ray_cluster, models_dir, jfk_audio):
    from ray import serve

    handle = _deploy_pinned(models_dir, "pinning", num_gpus=1)
    try:
        infos = replica_infos(handle, expected=2)
        assert len(infos) == 2
        assert sorted(i["cuda_visible_devices"] for i in infos.values()) == ["0", "1"]
        assert all(len(i["gpu_ids"]) == 1 for i in infos.values())
        # No physical GPU: each replica falls back to CPU int8 and still transcribes.
        assert {(i["device"], i["compute_type"]) for i in infos.values()} == {("cpu", "int8")}
        results = [handle.transcribe.remote(jfk_audio, TranscribeOptions()) for _ in range(4)]
        for r in results:
            assert wer(JFK_TEXT, r.result().text) <= 0.05
    finally:
        serve.delete("pinning")


def test_half_gpu_replicas_pack_onto_one_gpu(ray_cluster, models_dir):
    from ray import serve

    handle = _deploy_pinned(models_dir, "packing", num_gpus=0.5)
    try:
        infos = replica_infos(handle, expected=2)
        assert len(infos) == 2
        devices = {i["cuda_visible_devices"] for i in infos.values()}
        assert len(devices) == 1, devices
        assert all(i["assigned_resources"].get("GPU") == 0.5 for i in infos.values())
    finally:
        serve.delete("packing")


def test_cuda_libraries_resolve_inside_a_gpu_worker_process(ray_cluster):
    """Issue 23 item 5: CTranslate2 needs libcublas.so.12 (and cuDNN 9) on the GPU; the
    worker loads them from the venv's nvidia-* wheels, where no loader looks by itself."""
    import ray

    @ray.remote(num_gpus=1, num_cpus=0)
    def load() -> tuple[list[str], list[str]]:
        from pathlib import Path

        from deployments.models.cuda_libs import preload_cuda_libraries

        loaded = preload_cuda_libraries()
        maps = Path("/proc/self/maps").read_text().splitlines()
        mapped = sorted({line.split()[-1] for line in maps if "libcublas" in line})
        return loaded, mapped

    loaded, mapped = ray.get(load.remote(), timeout=120)
    assert [Path(p).name for p in loaded] == [
        "libcublasLt.so.12",
        "libcublas.so.12",
        "libcudnn.so.9",
    ]
    assert all("site-packages/nvidia/" in p for p in loaded), loaded
    assert {Path(p).name for p in mapped} >= {"libcublas.so.12", "libcublasLt.so.12"}


def test_a_missing_cuda_library_is_named_in_one_line(monkeypatch):
    from deployments.models import cuda_libs

    monkeypatch.setattr(cuda_libs, "LIBRARIES", (("nvidia.cublas", "libcublas.so.99"),))
    with pytest.raises(cuda_libs.CudaLibraryMissing) as err:
        cuda_libs.preload_cuda_libraries()
    message = str(err.value)
    assert "\n" not in message and "libcublas.so.99" in message and "nvidia-cublas-cu12" in message


def test_each_replica_caps_every_thread_pool_at_its_reserved_cpus(serve_url):
    """Issue 23 item 4: torch, OpenMP and BLAS (numpy's, used by the clustering) each run as
    many threads as the CPUs Ray reserved for the replica, not one per core of the host."""
    from ray import serve

    for deployment in ("Diarizer", "Transcriber"):
        info = serve.get_deployment_handle(deployment, "speech").info.remote().result()
        want = max(1, round(info["assigned_resources"].get("CPU", 1.0)))
        pools = info["thread_pools"]
        assert any(name.startswith(("blas", "openblas")) for name in pools), pools
        assert set(pools.values()) == {want}, (deployment, want, pools)
        if deployment == "Diarizer":
            assert pools["torch"] == want
