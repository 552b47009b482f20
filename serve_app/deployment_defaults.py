"""Deployment sizing has one source: the Serve config file.

`serve run serve_config.yaml` applies the file's `deployments` itself. An app built from
Python (tests, benches, scripts that call `build_app`) reads the same file here, so the
deployment classes carry no numbers of their own that the file also sets.
"""

from __future__ import annotations

import copy
import logging
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


@lru_cache(maxsize=4)
def _read(path: Path) -> dict[str, dict]:
    import yaml

    if not path.is_file():  # an install without the source tree's config
        log.warning("%s not found: deployments built from Python use Serve's defaults", path)
        return {}
    (app,) = yaml.safe_load(path.read_text())["applications"]
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app["deployments"]}


def config_deployments(path: Path = SERVE_CONFIG) -> dict[str, dict]:
    """The config's deployment options keyed by deployment name (a fresh copy each call)."""
    return copy.deepcopy(_read(Path(path)))


def options_for(name: str, defaults: dict[str, dict], override: dict | None) -> dict:
    """`defaults[name]` with `override` on top, key by key. A served model the config does
    not size (a `Transcriber-<model>` of the caller's choosing) is sized as the default
    model's `Transcriber`."""
    base = defaults.get(name)
    if base is None and name.startswith("Transcriber-"):
        base = defaults.get("Transcriber")
    return {**copy.deepcopy(base or {}), **(override or {})}
