#!/usr/bin/env bash
# Tools beyond the virtualenv, from Debian (apt-get as root, else sudo):
#   deploy/install_tools.sh kubectl    kubectl, to render deploy/k8s in `make test`; where none is
#                                      installed, Debian's kubernetes-client (kubectl 1.20, whose
#                                      built-in kustomize the overlays are written for too)
#   deploy/install_tools.sh rehearse   HAProxy for `make rehearse-scale` (perf/scale; its locust
#                                      is perf's, from `make setup-dev`)
# Idempotent: what is installed already is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {  # apt_install <package>...
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

for what in "$@"; do
  case "$what" in
    kubectl)
      command -v kubectl >/dev/null || { echo "[deploy] kubectl from Debian's kubernetes-client"
                                         apt_install kubernetes-client; }
      kubectl version --client 2>/dev/null | sed -n 1p ;;  # sed reads it all: no SIGPIPE under pipefail
    rehearse)
      command -v haproxy >/dev/null || { echo "[deploy] haproxy from Debian"; apt_install haproxy; } ;;
    *) echo "usage: $0 kubectl|rehearse ..." >&2; exit 2 ;;
  esac
done
