"""Make CTranslate2 find CUDA 12's cuBLAS and cuDNN from the venv's `nvidia-*` wheels.

CTranslate2 4.x opens `libcublas.so.12` (and cuDNN 9) with dlopen the first time it runs on
a GPU. The venv has them (nvidia-cublas-cu12 and nvidia-cudnn-cu12 come with torch), but in
site-packages/nvidia/*/lib, which no loader searches: unless something loaded them first,
the first GPU transcription fails with "Library libcublas.so.12 is not found", and a host
with only CUDA 13 system libraries fails the same way. Loading them here, by path and with
RTLD_GLOBAL, before CTranslate2 needs them, makes its dlopen find the loaded copies.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# (wheel package, library file) in load order: cuBLASLt before cuBLAS, which needs it.
LIBRARIES = (
    ("nvidia.cublas", "libcublasLt.so.12"),
    ("nvidia.cublas", "libcublas.so.12"),
    ("nvidia.cudnn", "libcudnn.so.9"),
)
WHEELS = {"nvidia.cublas": "nvidia-cublas-cu12", "nvidia.cudnn": "nvidia-cudnn-cu12"}


class CudaLibraryMissing(RuntimeError):
    """A CUDA library CTranslate2 needs on the GPU is not installed."""


def _wheel_lib(package: str, name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "lib" / name
        if path.exists():
            return path
    return None


def preload_cuda_libraries() -> list[str]:
    """Load cuBLAS and cuDNN for CTranslate2; the paths loaded. A library that no wheel
    provides is tried by name (a system CUDA 12 install); if that fails too, one line says
    which library and which wheel provides it."""
    loaded = []
    for package, name in LIBRARIES:
        path = _wheel_lib(package, name)
        try:
            ctypes.CDLL(str(path) if path else name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            raise CudaLibraryMissing(
                f"{name} was not found, so the transcriber cannot run on the GPU: install "
                f"{WHEELS[package]} in the service's environment (or CUDA 12's libraries), "
                "or set device=cpu"
            ) from None
        loaded.append(str(path) if path else name)
    log.info("CUDA libraries for CTranslate2: %s", ", ".join(loaded))
    return loaded
