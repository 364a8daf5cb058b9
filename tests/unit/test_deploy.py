"""The Kubernetes DaemonSet (deploy/kubernetes/) against Kubernetes' own schemas,
with kubernetes-validate, which carries them (no download), and the facts the
agent depends on."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

MANIFESTS = sorted((Path(__file__).parents[2] / "deploy" / "kubernetes").glob("*.yaml"))
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def documents():
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


def daemonset():
    return next(d for d in documents() if d["kind"] == "DaemonSet")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes_strictly(version):
    assert MANIFESTS
    for doc in documents():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error


def test_the_validator_rejects_a_mistake_so_it_really_checks():
    broken = daemonset()
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_the_daemonset_gives_the_agent_what_it_needs_and_no_more():
    pod = daemonset()["spec"]["template"]
    spec, [agent] = pod["spec"], pod["spec"]["containers"]
    assert spec["hostPID"] is True and not spec.get("hostNetwork")
    security = agent["securityContext"]
    assert security["privileged"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) <= {"BPF", "PERFMON", "SYS_PTRACE", "SYSLOG", "SYS_ADMIN"}
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert {"/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup"} <= mounts
    assert agent["resources"]["limits"]["memory"] and agent["resources"]["limits"]["cpu"]
    # the scrape annotation, the container port and the agent's --listen agree
    port = agent["ports"][0]["containerPort"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert agent["args"][agent["args"].index("--listen") + 1] == f":{port}"
    out = agent["args"][agent["args"].index("--out") + 1]
    assert out in mounts


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for unshare -n")
def test_validation_needs_no_network():
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "kubernetes_validate", "--strict",
                           *map(str, MANIFESTS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "daemonset/leaktrace-agent" in done.stdout + done.stderr
