"""What no Kubernetes schema checks in the rendered manifests (run by
check.sh): every Fanout file in the ConfigMap passes `fanout check` with
the environment its pods get, the ports it listens on are its container's
ports, and the control plane's peers are the StatefulSet's pods.

Usage: python check_rendered.py rendered.yaml path/to/fanout
"""

import os
import subprocess
import sys
import tempfile

import yaml


def fail(message):
    print(f"check_rendered: {message}", file=sys.stderr)
    sys.exit(1)


def main(rendered, fanout):
    objects = [o for o in yaml.safe_load_all(open(rendered)) if o]
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    configmaps = [c for n, c in by_kind.get("ConfigMap", {}).items() if n.startswith("fanout-config")]
    if len(configmaps) != 1:
        fail(f"expected one fanout-config ConfigMap, found {len(configmaps)}")
    files = configmaps[0]["data"]

    def workload(kind, name):
        w = by_kind.get(kind, {}).get(name)
        if w is None:
            fail(f"no {kind} {name}")
        return w

    control = workload("StatefulSet", "fanout-control")
    cache = workload("StatefulSet", "fanout-cache")
    proxy = workload("Deployment", "fanout-proxy")
    job = workload("Job", "fanout-apply-cluster")

    with tempfile.TemporaryDirectory() as tmp:
        # The files name /etc/fanout/...; check copies that name the same
        # files under tmp, so secrets the pods mount exist for `fanout check`.
        secrets = os.path.join(tmp, "secrets")
        os.makedirs(secrets)
        for s in ("write.token", "read.token", "cluster.secret"):
            with open(os.path.join(secrets, s), "w") as f:
                f.write("x" * 32)
        tls = os.path.join(tmp, "tls")
        os.makedirs(tls)
        overlay = os.path.join(os.path.dirname(os.path.abspath(__file__)), "overlays", "example", "secrets")
        for s in ("tls.crt", "tls.key"):
            with open(os.path.join(overlay, s)) as src, open(os.path.join(tls, s), "w") as dst:
                dst.write(src.read())
        checked = []
        for workload_, container_name, file_name, env in (
            (control, "control", "control.yaml", {"FANOUT_CONTROL_ID": str(control["spec"]["ordinals"]["start"])}),
            (cache, "cache", "cache.yaml", {"POD_NAME": "fanout-cache-0"}),
            (proxy, "proxy", "proxy.yaml", {"POD_NAME": "fanout-proxy-5d9c7-abcde", "POD_IP": "10.1.2.3"}),
            (job, "apply", "cluster.yaml", {}),
        ):
            spec = workload_["spec"]["template"]["spec"]
            container = next(c for c in spec["containers"] if c["name"] == container_name)
            args = container["args"]
            named = [a for a in args if a.startswith("/etc/fanout/config/") or a.startswith("--file=/etc/fanout/config/")]
            if not named or not named[-1].endswith("/" + file_name):
                fail(f"{container_name} runs {args}, not the ConfigMap's {file_name}")
            given = {e["name"] for e in container.get("env", [])}
            missing = set(env) - given
            if missing:
                fail(f"{container_name}: the pod does not set {sorted(missing)}, which {file_name} uses")
            text = files.get(file_name)
            if text is None:
                fail(f"the ConfigMap has no {file_name}")
            text = text.replace("/etc/fanout/secrets/", secrets + "/").replace("/etc/fanout/tls/", tls + "/")
            text = text.replace("/var/lib/fanout", os.path.join(tmp, "data"))
            path = os.path.join(tmp, file_name)
            with open(path, "w") as f:
                f.write(text)
            run = subprocess.run([fanout, "check", path], env={**os.environ, **env}, capture_output=True, text=True)
            if run.returncode != 0:
                fail(f"{file_name} with {env}: {run.stderr.strip()}")
            config = yaml.safe_load(text.replace("${", "{"))
            ports = {p["containerPort"] for p in container.get("ports", [])}
            for field in ("listen", "admin_listen"):
                if field in config:
                    port = int(str(config[field]).rsplit(":", 1)[1])
                    if port not in ports:
                        fail(f"{file_name} {field} port {port} is not a port of container {container_name}: {sorted(ports)}")
            if "tls" in config:
                port = int(config["tls"]["listen"].rsplit(":", 1)[1])
                if port not in ports:
                    fail(f"{file_name} tls.listen port {port} is not a port of container {container_name}")
            checked.append(file_name)

        peers = yaml.safe_load(files["control.yaml"].replace("${", "{"))["peers"]
        start = control["spec"]["ordinals"]["start"]
        pods = {
            (start + i, f"fanout-control-{start + i}.{control['spec']['serviceName']}:7000")
            for i in range(control["spec"]["replicas"])
        }
        listed = {(p["id"], p["address"]) for p in peers}
        if listed != pods:
            fail(f"control peers {sorted(listed)} are not the StatefulSet's pods {sorted(pods)}")
    print(f"fanout check passed with each pod's environment: {', '.join(checked)}; control peers are its pods")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail(__doc__)
    main(sys.argv[1], sys.argv[2])
