#!/usr/bin/env bash
# Installs Debian packages with apt when this machine can (apt-get and root, or sudo without a
# password), refreshing the package lists once if an install fails (fresh containers have none).
# Exit status: 0 installed, 1 apt is there but the install failed, 2 no apt-get or no root.
# Used by scripts/setup.sh and scripts/check-deploy.sh, so that both decide "cannot install"
# the same way.
set -uo pipefail
(($# > 0)) || { echo "usage: $0 PACKAGE..." >&2; exit 64; }
as_root=()
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || exit 2
  as_root=(sudo -n)
fi
command -v apt-get >/dev/null 2>&1 || exit 2
install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1
}
install "$@" && exit 0
"${as_root[@]}" apt-get update -qq >/dev/null 2>&1 && install "$@" && exit 0
exit 1
