#!/usr/bin/env python3
"""Measure the operator's leader handover on a cluster where the chart runs two replicas.

    scripts/leader-handover.py KUBECONFIG NAMESPACE [ROUNDS]

Each round waits until both operator replicas are Running and Ready (and 5 s more) and one holds the
leader record (ConfigMap vigil-operator-leader, annotation control-plane.alpha.kubernetes.io/leader),
deletes the holder's pod (the kubelet sends it SIGTERM), and reads the record every 50 ms until the
other replica holds it; it prints the time from the deletion to the
new holder. Every wait is bounded (3 minutes for the replicas, 60 s for the handover).
"""
import json
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    kubectl = ["kubectl", "--kubeconfig", sys.argv[1], "-n", sys.argv[2]]
    rounds = int(sys.argv[3]) if len(sys.argv) == 4 else 4

    def run(*args: str) -> str:
        return subprocess.run(kubectl + list(args), capture_output=True, text=True, check=True).stdout

    def holder() -> str:
        out = subprocess.run(
            kubectl + ["get", "configmap", "vigil-operator-leader", "-o", "json"], capture_output=True, text=True
        )
        if out.returncode != 0:
            return ""
        annotations = json.loads(out.stdout)["metadata"].get("annotations") or {}
        record = annotations.get("control-plane.alpha.kubernetes.io/leader")
        return json.loads(record).get("holderIdentity", "") if record else ""

    def ready_replicas() -> list:
        pods = json.loads(run("get", "pods", "-l", "app.kubernetes.io/name=vigil-operator", "-o", "json"))["items"]
        return [
            p["metadata"]["name"] for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in p["status"].get("containerStatuses", []))
        ]

    for n in range(1, rounds + 1):
        deadline = time.time() + 180
        while True:
            ready, lead = ready_replicas(), holder()
            if len(ready) == 2 and lead in ready:
                break
            if time.time() > deadline:
                print(f"round {n}: replicas {ready}, holder {lead!r} after 3 minutes", file=sys.stderr)
                return 1
            time.sleep(1)
        time.sleep(5)  # the new standby is past its start-up and looking at the Lease
        lead = holder()
        start = time.time()
        run("delete", "pod", lead, "--wait=false")
        while (new := holder()) in ("", lead):
            if time.time() - start > 60:
                print(f"round {n}: no new holder 60 s after deleting {lead}", file=sys.stderr)
                return 1
            time.sleep(0.05)
        print(f"round {n}: {lead} -> {new} in {int((time.time() - start) * 1000)} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
