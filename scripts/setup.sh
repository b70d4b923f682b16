#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: npm packages (Node 22 for the
# conformance suite, the reference MCP server), a Python virtualenv with the MCP SDK, and
# nginx (Debian's nginx-light) for the benchmark's zero-work-proxy columns when apt is there,
# and the tools scripts/check-deploy.sh checks the deployment artefacts with.
# Idempotent and quick when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-node.sh
bash scripts/setup-python.sh

# gatehouse-bench measures every cell through nginx too when it finds it; without it the bench
# skips those columns, so a machine without apt (or without root) still sets up.
have_nginx() { command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; }
if ! have_nginx; then
  as_root=()
  [[ $(id -u) == 0 ]] || as_root=(sudo -n)
  if command -v apt-get >/dev/null 2>&1 && { [[ ${#as_root[@]} == 0 ]] || command -v sudo >/dev/null 2>&1; }; then
    echo "setup: installing nginx-light for the benchmark"
    apt_install() {
      "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1
    }
    # The package lists may be missing (fresh container): refresh once and retry.
    apt_install || { "${as_root[@]}" apt-get update -qq >/dev/null 2>&1 && apt_install; } ||
      echo "setup: could not install nginx-light; gatehouse-bench will skip its nginx columns" >&2
    # The package may start its own server on port 80; the bench starts its own on loopback.
    "${as_root[@]}" service nginx stop >/dev/null 2>&1 || true
  else
    echo "setup: no apt-get (or no root); gatehouse-bench will skip its nginx columns" >&2
  fi
fi

# scripts/check-deploy.sh builds the image with buildah, renders the Kubernetes overlays with
# kubectl (Debian's kubernetes-client) and verifies the systemd unit with systemd-analyze. It
# skips, loudly, only what cannot be installed here; so a failed install is reported, not fatal.
deploy_tools=()
command -v buildah >/dev/null 2>&1 || deploy_tools+=(buildah)
command -v kubectl >/dev/null 2>&1 || deploy_tools+=(kubernetes-client)
command -v systemd-analyze >/dev/null 2>&1 || deploy_tools+=(systemd)
command -v curl >/dev/null 2>&1 || deploy_tools+=(curl)
command -v psql >/dev/null 2>&1 || deploy_tools+=(postgresql-client)
# The console's browser test (tests/e2e/test_console_browser.py) drives Debian's chromium with
# playwright-core, which cannot download a browser of its own here.
command -v chromium >/dev/null 2>&1 || deploy_tools+=(chromium)
if ((${#deploy_tools[@]})); then
  echo "setup: installing ${deploy_tools[*]} for scripts/check-deploy.sh"
  rc=0
  bash scripts/apt-install.sh "${deploy_tools[@]}" || rc=$?
  case $rc in
    0) ;;
    2) echo "setup: no apt-get (or no root); scripts/check-deploy.sh will skip what needs ${deploy_tools[*]}" >&2 ;;
    *) echo "setup: apt could not install ${deploy_tools[*]}; scripts/check-deploy.sh will fail" >&2 ;;
  esac
fi
