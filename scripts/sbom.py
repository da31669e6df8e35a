#!/usr/bin/env python3
"""Writes the CycloneDX 1.5 SBOM of one Vigil image.

    sbom.py PACKAGE VERSION REVISION OUT.json [FILE=DEBIAN_PACKAGE ...]

Components: every crate linked into PACKAGE's binary for Linux x86_64 (`cargo tree`, normal
dependencies only: build scripts and proc macros do not ship), with version, licence and
package URL, and the Debian packages the image copies files from (the C library, the CA
bundle), with their installed versions. The timestamp is SOURCE_DATE_EPOCH when set, so the
same commit gives the same file.
"""
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone


def crates(package: str) -> list[dict]:
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-p", package, "-e", "normal", "--target", "x86_64-unknown-linux-gnu",
         "--prefix", "none", "--format", "{p}\t{l}"],
        check=True, capture_output=True, text=True,
    ).stdout
    seen = {}
    for line in out.splitlines():
        spec, _, licence = line.partition("\t")
        licence = licence.removesuffix(" (*)").strip()
        parts = spec.removesuffix(" (*)").split(" ")
        if len(parts) < 2:
            continue
        name, version = parts[0], parts[1].lstrip("v")
        local = len(parts) > 2 and parts[2].startswith("(/")
        if name == package or (name, version) in seen:
            continue
        c = {"type": "library", "name": name, "version": version,
             "bom-ref": f"pkg:cargo/{name}@{version}"}
        if not local:
            c["purl"] = f"pkg:cargo/{name}@{version}"
        if licence:
            c["licenses"] = [{"expression": licence}]
        seen[(name, version)] = c
    return sorted(seen.values(), key=lambda c: (c["name"], c["version"]))


def owner(path: str) -> str:
    """The Debian package that ships `path`, trying the spellings merged /usr makes equal."""
    real = os.path.realpath(path)
    tries = [path, real, real.removeprefix("/usr"), "/usr" + real if not real.startswith("/usr") else real]
    for p in dict.fromkeys(tries):
        out = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.split(":")[0].strip()
    raise SystemExit(f"sbom.py: no Debian package owns {path}; name it as {path}=PACKAGE")


def debian(pairs: list[str]) -> list[dict]:
    arch = subprocess.run(["dpkg", "--print-architecture"], check=True, capture_output=True, text=True).stdout.strip()
    found = {}
    for pair in pairs:
        path, _, pkg = pair.partition("=")
        if not pkg:
            pkg = owner(path)
        if pkg in found:
            continue
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], check=True, capture_output=True,
                                 text=True).stdout.strip()
        found[pkg] = {"type": "library", "name": pkg, "version": version,
                      "bom-ref": f"pkg:deb/debian/{pkg}@{version}?arch={arch}",
                      "purl": f"pkg:deb/debian/{pkg}@{version}?arch={arch}"}
    return sorted(found.values(), key=lambda c: c["name"])


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    package, version, revision, out = sys.argv[1:5]
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or int(datetime.now(timezone.utc).timestamp())
    components = crates(package) + debian(sys.argv[5:])
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # Same inputs, same serial number: the file is reproducible.
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"vigil/{package}/{version}/{revision}")),
        "version": 1,
        "metadata": {
            "timestamp": datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "component": {"type": "container", "name": package, "version": version,
                          "bom-ref": f"vigil/{package}@{version}",
                          "properties": [{"name": "vcs:revision", "value": revision}]},
        },
        "components": components,
    }
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(bom, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
