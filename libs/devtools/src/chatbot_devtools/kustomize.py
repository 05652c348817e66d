"""A small renderer of this project's kustomizations, for tests and for machines without `kubectl`.

It supports what `deploy/k8s` uses, and refuses anything else rather than render it wrongly:
`resources` (files, or folders holding a kustomization), `namespace`, `configMapGenerator`
(`files`, with `generatorOptions.disableNameSuffixHash`) and `patches` by `path` (strategic
merge by kind and name: maps merge, lists of named items merge by `name`, other lists are
replaced). `kubectl kustomize deploy/k8s/overlays/prod` renders the same manifests.

    python -m chatbot_devtools.kustomize deploy/k8s/overlays/dev
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator", "generatorOptions", "patches"}


class KustomizeError(ValueError):
    pass


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge of `patch` onto `base` (the parts of it this project's patches use)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    named = isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base + patch)
    if named:
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if index is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[index] = _merge(merged_list[index], item)
        return merged_list
    return copy.deepcopy(patch)


def render(folder: str | Path) -> list[dict[str, Any]]:
    """The manifests the kustomization in `folder` produces."""
    folder = Path(folder)
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{folder}/kustomization.yaml: this renderer does not support {sorted(unknown)}")
    out: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        out.extend(render(path) if path.is_dir() else _documents(path))
    hashed = not spec.get("generatorOptions", {}).get("disableNameSuffixHash", False)
    for generator in spec.get("configMapGenerator", []):
        if hashed or set(generator) - {"name", "files"}:
            raise KustomizeError(f"{folder}: only `files` generators with disableNameSuffixHash are supported")
        data = {Path(name).name: (folder / name).read_text() for name in generator["files"]}
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}, "data": data})
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise KustomizeError(f"{folder}: only patches by `path` are supported")
        for patch in _documents(folder / entry["path"]):
            key = (patch["kind"], patch["metadata"]["name"])
            index = next((i for i, doc in enumerate(out) if (doc["kind"], doc["metadata"]["name"]) == key), None)
            if index is None:
                raise KustomizeError(f"{folder}/{entry['path']}: patches {key}, which no resource defines")
            out[index] = _merge(out[index], patch)
    if "namespace" in spec:
        for doc in out:
            doc["metadata"]["namespace"] = spec["namespace"]
    return out


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m chatbot_devtools.kustomize <folder with a kustomization.yaml>")
    try:
        yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=False)
    except (KustomizeError, OSError) as exc:
        sys.exit(f"kustomize: {exc}")


if __name__ == "__main__":
    main()
