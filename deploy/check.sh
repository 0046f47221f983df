#!/usr/bin/env bash
# Static checks of deploy/, runnable anywhere with python3 and PyYAML (`pip install pyyaml`); no
# container engine or cluster needed:
#   - every YAML file parses (multi-document files included) and the dashboard JSON parses;
#   - every resource and generator file listed in k8s/kustomization.yaml exists and parses;
#   - every image a manifest uses has an entry in the kustomization's `images`;
#   - every build target named in compose.yaml is a stage of the Dockerfile, and every file
#     compose.yaml mounts exists;
#   - if `kustomize` or `kubectl` is installed, the base renders.
set -euo pipefail
cd "$(dirname "$0")"

python3 - <<'PY'
import json
import pathlib
import re
import sys

try:
    import yaml
except ImportError:
    sys.exit("check: PyYAML is missing (pip install pyyaml)")

deploy = pathlib.Path(".")
failures = []


def fail(message):
    failures.append(message)


def load_yaml(path):
    try:
        with open(path) as f:
            return [doc for doc in yaml.safe_load_all(f) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        fail(f"{path}: {error}")
        return []


yaml_files = sorted(
    p for p in deploy.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
)
for path in yaml_files:
    load_yaml(path)

for path in sorted(deploy.rglob("*.json")):
    try:
        json.loads(path.read_text())
    except ValueError as error:
        fail(f"{path}: {error}")

# Kustomize base.
base = deploy / "k8s"
(kustomization,) = load_yaml(base / "kustomization.yaml") or [{}]
images_declared = {image["name"] for image in kustomization.get("images", [])}
images_used = set()
for resource in kustomization.get("resources", []):
    path = base / resource
    if not path.is_file():
        fail(f"{path}: listed in kustomization.yaml but missing")
        continue
    for doc in load_yaml(path):
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= doc.keys():
            fail(f"{path}: a document lacks apiVersion, kind or metadata")
            continue
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            images_used.add(container["image"])
for generator in kustomization.get("configMapGenerator", []) + kustomization.get(
    "secretGenerator", []
):
    for entry in generator.get("envs", []) + generator.get("files", []):
        path = base / entry.split("=")[-1]
        if not path.is_file():
            fail(f"{path}: listed in kustomization.yaml but missing")
        elif entry in generator.get("envs", []):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
                    fail(f"{path}:{number}: not KEY=VALUE")
for image in sorted(images_used - images_declared):
    fail(f"k8s: image {image!r} has no entry in kustomization.yaml `images`")

# Compose against the Dockerfile.
stages = set(
    re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (deploy / "Dockerfile").read_text(), re.M | re.I)
)
(compose,) = load_yaml(deploy / "compose.yaml") or [{}]
for name, service in compose.get("services", {}).items():
    build = service.get("build")
    if isinstance(build, dict):
        if build.get("target") not in stages:
            fail(f"compose.yaml: service {name} builds target {build.get('target')!r}, not a Dockerfile stage")
        if (deploy / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve() != (
            deploy / "Dockerfile"
        ).resolve():
            fail(f"compose.yaml: service {name} does not build deploy/Dockerfile")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith((".", "/")) and not (deploy / source).exists():
            fail(f"compose.yaml: service {name} mounts {source}, which does not exist")

if failures:
    print("\n".join(f"check: {failure}" for failure in failures), file=sys.stderr)
    sys.exit(1)
print(f"check: {len(yaml_files)} YAML files, the dashboard, the kustomize base and compose.yaml are consistent")
PY

if command -v kustomize >/dev/null 2>&1; then
  kustomize build k8s >/dev/null
  echo "check: kustomize build k8s renders"
elif command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize k8s >/dev/null
  echo "check: kubectl kustomize k8s renders"
fi
