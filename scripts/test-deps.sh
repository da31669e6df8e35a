#!/usr/bin/env bash
# Installs what the tests need that cargo does not fetch: Debian's prometheus package
# (promtool checks the agent's /metrics output), prometheus-alertmanager (the alert
# receiver's test posts to a real Alertmanager), and buildah, containerd, runc and skopeo (the
# image tests build both images and run them in real containers), systemd's journald and
# util-linux's logger (the journal test starts a journald and logs through it). Idempotent; a
# no-op when all is present.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
[ -x /lib/systemd/systemd-journald ] || need+=(systemd)
command -v logger >/dev/null 2>&1 || need+=(bsdutils)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing test dependencies: ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
