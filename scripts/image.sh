#!/usr/bin/env bash
# Vigil's container images: built with buildah from images/Containerfile, run in a real
# container with containerd's ctr, pushed with skopeo. As root (buildah, containerd and runc
# need it here).
#
#   image.sh build NAME BINARY OUTDIR      OUTDIR/NAME.oci.tar (OCI archive), NAME.sbom.cdx.json,
#                                          NAME.digest (the manifest digest a registry will serve)
#   image.sh run ARCHIVE [--mount SPEC]... -- ARGV...
#                                          ARGV in a container of the image, in a private containerd
#                                          that lives as long as the command; prints its output
#   image.sh push ARCHIVE REPOSITORY       pushes to REPOSITORY:VERSION, checks the digest, prints
#                                          REPOSITORY@DIGEST
#
# The image holds the binary, the C library it links (from Debian, listed in the SBOM), the CA
# bundle, /etc/passwd with root and nonroot (65532), and the SBOM at
# /usr/share/doc/vigil/sbom.cdx.json: no shell, no package manager. Its timestamps are the
# commit's (SOURCE_DATE_EPOCH), so the same commit and binary give the same image.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"

die() { echo "image.sh: $*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 is missing (make test-deps installs it)"; }

build() {
  local name="$1" binary="$2" out="$3"
  need buildah
  [ -x "$binary" ] || die "no executable at $binary (build it first)"
  mkdir -p "$out"
  local revision epoch work
  revision="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  epoch="${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 0)}"
  work="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  local rootfs="$work/context/rootfs"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/usr/share/doc/vigil" "$rootfs/tmp"
  cp "$binary" "$rootfs/usr/local/bin/$name"
  # The shared libraries the binary links, at the paths the loader looks in.
  local libs=()
  while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
    libs+=("$lib")
  done < <(ldd "$binary" | awk '/=> \//{print $3} /^[[:space:]]*\/.*ld-linux/{print $1}')
  [ ${#libs[@]} -gt 0 ] || die "ldd found no libraries for $binary"
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || die "$ca is missing (Debian's ca-certificates)"
  cp "$ca" "$rootfs$ca"
  printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65532:65532:nonroot:/:/nonexistent\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  local pairs=()
  for l in "${libs[@]}"; do pairs+=("$l"); done
  (cd "$ROOT" && SOURCE_DATE_EPOCH="$epoch" python3 scripts/sbom.py "$name" "$VERSION" "$revision" \
    "$out/$name.sbom.cdx.json" "${pairs[@]}" "$ca=ca-certificates")
  cp "$out/$name.sbom.cdx.json" "$rootfs/usr/share/doc/vigil/sbom.cdx.json"
  sed "s/@BINARY@/$name/g" "$ROOT/images/Containerfile" >"$work/context/Containerfile"
  local storage=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
  buildah "${storage[@]}" build --quiet --layers=false --timestamp "$epoch" \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$revision" \
    --label "org.opencontainers.image.source=https://github.com/vigil-dev/vigil" \
    --label "org.opencontainers.image.licenses=Apache-2.0" \
    --label "dev.vigil.sbom=/usr/share/doc/vigil/sbom.cdx.json" \
    -t "localhost/$name:$VERSION" "$work/context" >/dev/null
  rm -f "$out/$name.oci.tar"
  buildah "${storage[@]}" push --quiet --format oci "localhost/$name:$VERSION" \
    "oci-archive:$out/$name.oci.tar:$name:$VERSION" >/dev/null
  # The manifest digest, as the archive's index names it: what a registry serves after a push.
  tar -xOf "$out/$name.oci.tar" index.json | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])' >"$out/$name.digest"
  buildah "${storage[@]}" rmi --all >/dev/null 2>&1 || true
  echo "$out/$name.oci.tar $(cat "$out/$name.digest") $(du -h "$out/$name.oci.tar" | cut -f1)"
}

run() {
  local archive="$1"; shift
  need ctr; need containerd; need runc
  [ -f "$archive" ] || die "no image archive at $archive"
  local mounts=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    [ "$1" = "--mount" ] || die "run: expected --mount SPEC or --, got $1"
    mounts+=(--mount "$2"); shift 2
  done
  [ "${1:-}" = "--" ] || die "run: missing -- before the command"
  shift
  local work
  work="$(mktemp -d)"
  printf 'version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$work/config.toml"
  containerd --config "$work/config.toml" --root "$work/root" --state "$work/state" \
    --address "$work/containerd.sock" >"$work/containerd.log" 2>&1 &
  local pid=$!
  # shellcheck disable=SC2064
  trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$work'" EXIT
  local ctr=(ctr --address "$work/containerd.sock" --namespace vigil-image-test)
  local i
  for i in $(seq 1 100); do
    "${ctr[@]}" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/containerd.log" >&2; die "containerd exited"; }
    sleep 0.1
  done
  "${ctr[@]}" version >/dev/null 2>&1 || { cat "$work/containerd.log" >&2; die "containerd did not start in 10 s"; }
  local ref
  ref="$("${ctr[@]}" images import "$archive" | awk '{print $2}' | head -1)"
  [ -n "$ref" ] || ref="$("${ctr[@]}" images ls -q | head -1)"
  "${ctr[@]}" run --rm "${mounts[@]}" "$ref" "vigil-image-test-$$" "$@"
}

push() {
  local archive="$1" repository="$2"
  need skopeo
  local name digest pushed tls=()
  name="$(basename "$archive" .oci.tar)"
  digest="$(cat "${archive%.oci.tar}.digest")"
  # A registry on this machine speaks plain HTTP.
  case "$repository" in 127.0.0.1:*|localhost:*|localhost/*) tls=(--dest-tls-verify=false) ;; esac
  skopeo copy --quiet "${tls[@]}" --digestfile "$archive.pushed" "oci-archive:$archive" \
    "docker://$repository:$VERSION" >&2
  pushed="$(cat "$archive.pushed")"
  rm -f "$archive.pushed"
  [ "$pushed" = "$digest" ] || die "$name: the registry holds $pushed, the archive $digest"
  echo "$repository@$digest"
}

case "${1:-}" in
  build) [ $# -eq 4 ] || die "usage: image.sh build NAME BINARY OUTDIR"; build "$2" "$3" "$4" ;;
  run) [ $# -ge 3 ] || die "usage: image.sh run ARCHIVE [--mount SPEC]... -- ARGV..."; shift; run "$@" ;;
  push) [ $# -eq 3 ] || die "usage: image.sh push ARCHIVE REPOSITORY"; push "$2" "$3" ;;
  *) die "usage: image.sh build|run|push ... (see the header of this script)" ;;
esac
