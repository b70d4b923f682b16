#!/usr/bin/env bash
# Checks the deployment artefacts for real: the Containerfile (built from local files with
# buildah, then the image's root filesystem run read-only as its non-root user: /healthz, the
# HEALTHCHECK command, one MCP call through it to the test fixture, the SIGTERM drain; then two
# of them on one PostgreSQL schema, a session opened on one and continued on the other), the
# Kubernetes overlays (rendered offline with `kubectl kustomize`, validated with
# kubernetes-validate --strict, their configuration passed through `gatehouse check`) and the
# systemd unit (`systemd-analyze verify`). Called by scripts/test.sh after the build.
#
#   bash scripts/check-deploy.sh            # uses target/debug/gatehouse and gatehouse-fixture
#
# A tool that is missing is installed with apt; a part is skipped, loudly, only when that is
# impossible (no apt-get or no root). Anything else that goes wrong fails the script.
# Where no mount namespace can be made, the image runs in a plain chroot (root filesystem
# writable); GATEHOUSE_CHECK_NO_MOUNT_NS=1 forces that path, to test it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin=${GATEHOUSE_BIN:-$repo/target/debug/gatehouse}
fixture=${GATEHOUSE_FIXTURE_BIN:-$repo/target/debug/gatehouse-fixture}
python=$repo/.venv/bin/python

failures=()
skipped=()
say() { echo "check-deploy: $*"; }
fail() {
  echo "check-deploy: FAIL: $*" >&2
  failures+=("$1")
}
skip() {
  {
    echo "check-deploy: ################################################################"
    echo "check-deploy: SKIPPED: $*"
    echo "check-deploy: ################################################################"
  } >&2
  skipped+=("$1")
}

work=$(mktemp -d /tmp/gatehouse-check-deploy.XXXXXX)
pids=()
storage=()
runner=()
pg_schema=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ -n $pg_schema ]]; then
    psql -q postgres://postgres@127.0.0.1:5432/test -c "DROP SCHEMA IF EXISTS $pg_schema CASCADE" >/dev/null 2>&1 || true
  fi
  if ((${#storage[@]})); then
    buildah "${storage[@]}" rm --all >/dev/null 2>&1 || true
    buildah "${storage[@]}" rmi --all --force >/dev/null 2>&1 || true
  fi
  [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

# ensure COMMAND PACKAGE: the command exists afterwards (0), or cannot be installed here (2),
# or apt failed to install it (1).
ensure() {
  command -v "$1" >/dev/null 2>&1 && return 0
  say "installing $2 for $1"
  local rc=0
  bash scripts/apt-install.sh "$2" || rc=$?
  ((rc == 0)) && command -v "$1" >/dev/null 2>&1 && return 0
  ((rc == 2)) && return 2
  return 1
}
# needs NAME COMMAND PACKAGE: like ensure, but reports a skip or a failure for the part NAME.
needs() {
  local rc=0
  ensure "$2" "$3" || rc=$?
  case $rc in
    0) return 0 ;;
    2) skip "$1" "no $2 and it cannot be installed here (no apt-get or no root)" ;;
    *) fail "$1" "no $2 and apt could not install $3" ;;
  esac
  return 1
}

# wait_line FILE PREFIX SECONDS: prints the rest of the first line of FILE starting with PREFIX.
wait_line() {
  local deadline=$((SECONDS + $3))
  while ((SECONDS < deadline)); do
    local line
    line=$(grep -m1 "^$2" "$1" 2>/dev/null || true)
    if [[ -n $line ]]; then
      echo "${line#"$2"}"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

for f in "$bin" "$fixture"; do
  [[ -x $f ]] || { echo "check-deploy: $f is missing: build first (cargo build --workspace)" >&2; exit 1; }
done
[[ -x $python ]] || bash scripts/setup-python.sh

# ---------------------------------------------------------------- container image
check_image() {
  local t0=$SECONDS ctx=$work/ctx rootfs=$work/ctx/rootfs
  # The runtime stage's tree, as the Containerfile's build stage makes it: the binary (without
  # its debug sections), every library ldd lists at the path it lists, the CA bundle.
  install -D -m 0755 "$bin" "$rootfs/usr/local/bin/gatehouse"
  strip "$rootfs/usr/local/bin/gatehouse"
  local libs
  libs=$(ldd "$bin" | grep -o '/[^ ]*')
  [[ -n $libs ]] || { fail image "ldd listed no library for $bin"; return; }
  # Copied with their modes: the loader must stay executable.
  for lib in $libs; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L --preserve=mode "$lib" "$rootfs$lib"
  done
  install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  mkdir -p "$rootfs/etc/gatehouse" "$rootfs/var/lib/gatehouse" "$rootfs/tmp" "$rootfs/run"
  chown 65532:65532 "$rootfs/var/lib/gatehouse"
  chmod 1777 "$rootfs/tmp"

  # A private image store in the work directory, so the check leaves nothing behind; vfs
  # works without overlay or fuse.
  storage=(--root "$work/storage" --runroot "$work/runroot" --storage-driver vfs)
  local image=localhost/gatehouse:check
  # --format docker: the OCI format has no HEALTHCHECK (buildah would drop it).
  if ! buildah "${storage[@]}" bud --quiet --format docker --target from-context \
    -f "$repo/Containerfile" -t "$image" "$ctx" >"$work/bud.log" 2>&1; then
    cat "$work/bud.log" >&2
    fail image "buildah could not build the Containerfile's runtime stage"
    return
  fi
  say "image built in $((SECONDS - t0)) s"

  # The image's metadata is what the Containerfile promises.
  buildah "${storage[@]}" inspect --type image "$image" >"$work/inspect.json"
  if ! "$python" - "$work/inspect.json" <<'PY'; then
import json, sys
cfg = json.load(open(sys.argv[1]))["Docker"]["config"]
want = {
    "User": "65532:65532",
    "StopSignal": "SIGTERM",
    "Entrypoint": ["/usr/local/bin/gatehouse"],
    "Cmd": ["serve"],
    "WorkingDir": "/var/lib/gatehouse",
}
bad = [f"{k}: {cfg.get(k)!r}, expected {v!r}" for k, v in want.items() if cfg.get(k) != v]
test = (cfg.get("Healthcheck") or {}).get("Test") or []
if test[:3] != ["CMD", "/usr/local/bin/gatehouse", "probe"] or not test[-1].endswith(":9464/healthz"):
    bad.append(f"Healthcheck: {test!r}")
if "/var/lib/gatehouse" not in (cfg.get("Volumes") or {}):
    bad.append(f"Volumes: {cfg.get('Volumes')!r}")
for b in bad:
    print("check-deploy: image config", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    fail image "the image's configuration differs from the Containerfile's promises"
  fi
  local size files
  size=$(buildah "${storage[@]}" images --format '{{.Size}}' "$image")
  files=$(cd "$rootfs" && find . -type f | sort | tr '\n' ' ')
  say "image size $size; files: $files"

  local ctr mnt
  ctr=$(buildah "${storage[@]}" from --pull=never "$image")
  mnt=$(buildah "${storage[@]}" mount "$ctr")
  local owner
  owner=$(stat -c '%u:%g %a' "$mnt/var/lib/gatehouse")
  [[ $owner == "65532:65532 755" ]] || fail image "/var/lib/gatehouse in the image is $owner, expected 65532:65532 755"
  owner=$(stat -c '%u:%g %a' "$mnt/tmp")
  [[ $owner == "0:0 1777" ]] || fail image "/tmp in the image is $owner, expected 0:0 1777"
  # Whether this machine runs containers at all (it often cannot: cgroups, no runtime). The
  # gateway itself runs in a chroot of the image's root filesystem either way, mounted
  # read-only (buildah run has no read-only root); where buildah runs containers, the
  # HEALTHCHECK command is also run by it, against that gateway.
  runner=()
  if timeout 20 buildah "${storage[@]}" run --isolation chroot --user 65532:65532 "$ctr" \
    -- /usr/local/bin/gatehouse session-key >/dev/null 2>&1; then
    say "buildah runs the image here (chroot isolation)"
    runner=(timeout 20 buildah "${storage[@]}" run --isolation chroot --user 65532:65532 "$ctr" --)
  else
    say "buildah cannot run containers here; using chroot on the image's root filesystem"
  fi
  run_image "$mnt"
}

# start_gateway NAME ETC STATE: starts the gateway from the image's root filesystem ($mnt) as
# 65532, with ETC at /etc/gatehouse and STATE at /var/lib/gatehouse; sets gw_pid and gw_how. In a private mount namespace the root filesystem is bound read-only and
# ETC (read-only) and STATE are mounted over it; without one (an unprivileged CI container)
# the files are copied into the container's own, writable, root filesystem instead.
start_gateway() {
  local name=$1 etc=$2 state=$3
  local inner='set -e
    mount --bind "$1" "$1"
    mount -o remount,bind,ro "$1"
    mount --bind -o ro "$2" "$1/etc/gatehouse"
    mount --bind "$3" "$1/var/lib/gatehouse"
    cd /
    exec setpriv --no-new-privs chroot --userspec=65532:65532 "$1" \
      /usr/local/bin/gatehouse serve --config /etc/gatehouse/gatehouse.yaml'
  gw_how="read-only root filesystem"
  local launch=(unshare --mount --propagation private sh -c "$inner" sh "$mnt" "$etc" "$state")
  if [[ -n ${GATEHOUSE_CHECK_NO_MOUNT_NS:-} ]] || ! unshare --mount --propagation private true 2>/dev/null; then
    gw_how="chroot only (no mount namespace here, root filesystem writable)"
    cp -p "$etc/"* "$mnt/etc/gatehouse/"
    launch=(setpriv --no-new-privs chroot --userspec=65532:65532 "$mnt"
      /usr/local/bin/gatehouse serve --config /etc/gatehouse/gatehouse.yaml)
  fi
  (cd / && exec "${launch[@]}") >"$work/$name.out" 2>"$work/$name.err" &
  gw_pid=$!
  pids+=("$gw_pid")
}

# await_gateway NAME: waits for the gateway started as NAME to listen; sets gw_ops, gw_addr.
await_gateway() {
  gw_ops=$(wait_line "$work/$1.out" "gatehouse ops listening on " 30) &&
    gw_addr=$(wait_line "$work/$1.out" "gatehouse listening on " 30) || {
    cat "$work/$1.err" >&2
    return 1
  }
}

# stop_gateway PID OPS NAME: SIGTERM (the image's STOPSIGNAL) drains: not ready at once, then
# a clean exit.
stop_gateway() {
  local pid=$1 ops=$2 name=$3 code
  kill -TERM "$pid"
  sleep 0.3
  code=$(curl -s -o /dev/null -w '%{http_code}' "$ops/readyz" || true)
  [[ $code == 503 ]] || fail image-run "$name: /readyz answered $code during the drain, expected 503"
  local deadline=$((SECONDS + 15)) rc=0
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    fail image-run "$name: the gateway did not exit within 15 s of SIGTERM"
  else
    wait "$pid" || rc=$?
    ((rc == 0)) || { cat "$work/$name.err" >&2; fail image-run "$name: the gateway exited with status $rc after SIGTERM"; }
  fi
}

# mcp_echo FIRST SECOND TEXT: initialize on the gateway at FIRST, then notifications/initialized
# and tools/call echo TEXT in that session on the gateway at SECOND; prints the call's answer.
mcp_echo() {
  local mcp=(curl -sS --max-time 10 -H 'Content-Type: application/json'
    -H 'Accept: application/json, text/event-stream')
  "${mcp[@]}" -D "$work/init.headers" -o "$work/init.body" "$1/mcp" \
    -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"check-deploy","version":"1"}}}' ||
    true
  local sid
  sid=$(grep -i '^mcp-session-id:' "$work/init.headers" | cut -d' ' -f2 | tr -d '\r' || true)
  if [[ -z $sid ]]; then
    echo "initialize gave no session: $(head -c 300 "$work/init.body" 2>/dev/null)"
    return
  fi
  mcp+=(-H "Mcp-Session-Id: $sid" -H 'MCP-Protocol-Version: 2025-11-25')
  "${mcp[@]}" -o /dev/null "$2/mcp" -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' || true
  "${mcp[@]}" "$2/mcp" \
    -d "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"text\":\"$3\"}}}" || true
}

# run_image ROOTFS: the gateway from the image's root filesystem, read-only, as 65532, with a
# configuration and a state directory mounted where the Containerfile says, in front of the
# fixture on the host's loopback; then two of them sharing PostgreSQL and the session keys.
run_image() {
  mnt=$1
  if [[ $(id -u) != 0 ]]; then
    skip image-run "chroot needs root"
    return
  fi
  "$fixture" http --bind 127.0.0.1 --port 0 >"$work/fixture.out" 2>&1 &
  pids+=($!)
  upstream=$(wait_line "$work/fixture.out" "READY " 20) || { fail image-run "the fixture did not start"; return; }

  local etc=${work:?}/etc
  mkdir -p "$etc" "$work/state"
  "$bin" session-key >"$etc/session-key-1"
  {
    echo "# Written by scripts/check-deploy.sh: the image's gateway in front of the test fixture."
    echo "listen: 127.0.0.1:0"
    echo "ops: { listen: 127.0.0.1:0, drain: 2s, grace: 2s }"
    echo "watch_config: false"
    echo "sessions:"
    echo "  keys:"
    echo "    - { id: k1, key: { file: /etc/gatehouse/session-key-1 } }"
    echo "store: { url: sqlite:///var/lib/gatehouse/gatehouse.db }"
    echo "servers:"
    echo "  - { name: main, path: /mcp, upstreams: [fixture] }"
    echo "upstreams:"
    echo "  fixture: { kind: http, url: \"$upstream\" }"
  } >"$etc/gatehouse.yaml"
  chown -R 65532:65532 "$work/state" "$etc"
  chmod 0400 "$etc/session-key-1"

  start_gateway single "$etc" "$work/state"
  await_gateway single || { fail image-run "the gateway from the image did not start ($gw_how)"; return; }
  local gw=$gw_pid ops=$gw_ops addr=$gw_addr state=$work/state
  [[ $gw_how == read-only* ]] || state=$mnt/var/lib/gatehouse
  say "gateway from the image: $gw_how, uid 65532, mcp $addr, ops $ops"
  # What the process really runs as: the image's user, its root mounted read-only.
  [[ $(stat -c %u "/proc/$gw") == 65532 ]] || fail image-run "the gateway runs as uid $(stat -c %u "/proc/$gw"), not 65532"
  if [[ $gw_how == read-only* ]] && ! awk '$5 == "/" { split($6, o, ","); if (o[1] == "ro") found = 1 } END { exit !found }' "/proc/$gw/mountinfo"; then
    fail image-run "the gateway's root filesystem is not mounted read-only"
  fi

  # The HEALTHCHECK's command, run inside the image, succeeds on /healthz and fails on a port
  # where nothing listens.
  local probe=(chroot --userspec=65532:65532 "$mnt" /usr/local/bin/gatehouse probe --timeout 3)
  "${probe[@]}" "$ops/healthz" >/dev/null || fail image-run "gatehouse probe $ops/healthz failed"
  if "${probe[@]}" "http://127.0.0.1:1/healthz" >/dev/null 2>&1; then
    fail image-run "gatehouse probe succeeded against a closed port"
  fi
  if ((${#runner[@]})) && ! "${runner[@]}" /usr/local/bin/gatehouse probe "$ops/healthz" >/dev/null; then
    fail image-run "the HEALTHCHECK command run by buildah failed"
  fi
  local code body
  code=$(curl -s -o /dev/null -w '%{http_code}' "$ops/readyz")
  [[ $code == 200 ]] || fail image-run "/readyz answered $code, expected 200"

  body=$(mcp_echo "$addr" "$addr" "hello from the image")
  [[ $body == *'"text":"hello from the image"'* ]] ||
    fail image-run "tools/call echo through the image's gateway answered: ${body:0:300}"
  # The store was created in the state volume, by the image's user.
  [[ -f $state/gatehouse.db && $(stat -c %u "$state/gatehouse.db") == 65532 ]] ||
    fail image-run "no SQLite store owned by 65532 in the state volume"
  stop_gateway "$gw" "$ops" single

  run_replicas
}

# run_replicas: docs/deployment.md's claim, with the image: two gateways started at once on an
# empty PostgreSQL schema (both migrate it), sharing sessions.keys; a session opened on one is
# continued on the other without affinity, and both write their audit records to the store.
run_replicas() {
  needs replicas psql postgresql-client || return 0
  local pg=postgres://postgres@127.0.0.1:5432/test schema="check_deploy_$$_$RANDOM"
  if ! psql -q "$pg" -c "CREATE SCHEMA $schema" >/dev/null 2>"$work/psql.err"; then
    cat "$work/psql.err" >&2
    fail replicas "PostgreSQL on 127.0.0.1:5432 (database test, trust) is needed, as for the store tests"
    return
  fi
  pg_schema=$schema
  local etc=${work:?}/etc-replicas
  mkdir -p "$etc" "$work/state-a" "$work/state-b"
  cp -p "$work/etc/session-key-1" "$etc/"
  printf '%s' "$pg?options=-c%20search_path%3D$schema" >"$etc/store-url"
  sed -e 's#^store: .*#store: { url: { file: /etc/gatehouse/store-url } }#' \
    -e 's#^\# Written by.*#\# Written by scripts/check-deploy.sh: one of two replicas sharing PostgreSQL.#' \
    "$work/etc/gatehouse.yaml" >"$etc/gatehouse.yaml"
  chown -R 65532:65532 "$etc" "$work/state-a" "$work/state-b"
  chmod 0400 "$etc/store-url"

  # Both start at once on the empty schema: their migrations must serialize.
  local a_pid a_ops a_addr b_pid b_ops b_addr body
  start_gateway replica-a "$etc" "$work/state-a"
  a_pid=$gw_pid
  start_gateway replica-b "$etc" "$work/state-b"
  b_pid=$gw_pid
  if ! await_gateway replica-a; then
    fail replicas "replica A did not start"
    return
  fi
  a_ops=$gw_ops a_addr=$gw_addr
  if ! await_gateway replica-b; then
    fail replicas "replica B did not start"
    return
  fi
  b_ops=$gw_ops b_addr=$gw_addr
  body=$(mcp_echo "$a_addr" "$b_addr" "opened on A, called on B")
  [[ $body == *'"text":"opened on A, called on B"'* ]] ||
    fail replicas "a session opened on replica A and continued on B answered: ${body:0:300}"
  body=$(mcp_echo "$b_addr" "$a_addr" "opened on B, called on A")
  [[ $body == *'"text":"opened on B, called on A"'* ]] ||
    fail replicas "a session opened on replica B and continued on A answered: ${body:0:300}"
  stop_gateway "$a_pid" "$a_ops" replica-a
  stop_gateway "$b_pid" "$b_ops" replica-b
  # A clean stop writes the audit queue: both calls are in the shared store.
  local calls
  calls=$(psql -tA "$pg" -c "SELECT count(*) FROM $schema.audit_records WHERE method = 'tools/call'" 2>&1 || true)
  [[ $calls == 2 ]] || fail replicas "the shared store holds $calls tools/call audit records, expected 2"
  say "two replicas from the image on PostgreSQL: sessions continued across them, $calls calls audited"
}

if needs image buildah buildah && needs image curl curl && needs image strip binutils; then
  check_image
fi

# ---------------------------------------------------------------- Kubernetes
check_kubernetes() {
  local t0=$SECONDS kube=$work/kubernetes
  cp -r "$repo/deploy/kubernetes" "$kube"
  # The Secrets' files, which a deployer writes (never committed).
  for overlay in single replicas; do
    for key in session-key-1 sealing-key-1; do "$bin" session-key >"$kube/overlays/$overlay/secrets/$key"; done
  done
  printf '%s' 'postgres://gatehouse:secret@postgres.db.svc:5432/gatehouse' >"$kube/overlays/replicas/secrets/store-url"
  mkdir -p "$work/secrets"
  cp "$kube/overlays/replicas/secrets/"* "$work/secrets/"

  local validate=$repo/.venv/bin/kubernetes-validate
  [[ -x $validate ]] || bash scripts/setup-python.sh
  for overlay in single replicas; do
    local out=$work/$overlay.yaml
    if ! kubectl kustomize "$kube/overlays/$overlay" >"$out" 2>"$work/kustomize.err"; then
      cat "$work/kustomize.err" >&2
      fail kubernetes "kubectl kustomize overlays/$overlay failed"
      continue
    fi
    # Only the deprecation warnings of newer kustomize for the fields older ones need.
    if grep -v "Warning: '\(bases\|patchesStrategicMerge\)' is deprecated" "$work/kustomize.err" | grep -q .; then
      cat "$work/kustomize.err" >&2
      fail kubernetes "kubectl kustomize overlays/$overlay warned"
    fi
    if ! "$validate" --strict --quiet "$out"; then
      fail kubernetes "kubernetes-validate --strict rejected overlays/$overlay"
    fi
    # What the overlay promises, read from the rendered objects.
    if ! "$python" - "$out" "$overlay" "$work/$overlay-gatehouse.yaml" "$work/secrets" <<'PY'; then
import sys, yaml
out, overlay, config_out, secrets = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(out)) if d]
kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
bad = []
want = {"Namespace", "ConfigMap", "Secret", "Service", "Deployment"}
want |= {"PersistentVolumeClaim"} if overlay == "single" else {"PodDisruptionBudget", "HorizontalPodAutoscaler"}
if set(kinds) != want:
    bad.append(f"kinds {sorted(kinds)}, expected {sorted(want)}")
dep = kinds["Deployment"][0]
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
sc, psc = c["securityContext"], pod["securityContext"]
if not (psc.get("runAsNonRoot") and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
    bad.append(f"pod securityContext {psc}")
if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
        and sc.get("capabilities", {}).get("drop") == ["ALL"]):
    bad.append(f"container securityContext {sc}")
if c["livenessProbe"]["httpGet"]["path"] != "/healthz" or c["readinessProbe"]["httpGet"]["path"] != "/readyz":
    bad.append("probes are not /healthz and /readyz")
cm = kinds["ConfigMap"][0]
secret = kinds["Secret"][0]["metadata"]["name"]
vols = {v["name"]: v for v in pod["volumes"]}
if vols["config"]["configMap"]["name"] != cm["metadata"]["name"]:
    bad.append("the config volume does not name the generated ConfigMap")
if vols["secrets"]["secret"]["secretName"] != secret:
    bad.append("the secrets volume does not name the generated Secret")
state = vols["state"]
if overlay == "single":
    if dep["spec"]["replicas"] != 1 or dep["spec"]["strategy"] != {"type": "Recreate"} or "persistentVolumeClaim" not in state:
        bad.append(f"single: replicas {dep['spec']['replicas']}, strategy {dep['spec']['strategy']}, state {state}")
else:
    if dep["spec"]["replicas"] < 2 or "emptyDir" not in state:
        bad.append(f"replicas: replicas {dep['spec']['replicas']}, state {state}")
for d in docs:
    if d["kind"] != "Namespace" and d["metadata"].get("namespace") != "gatehouse":
        bad.append(f"{d['kind']}/{d['metadata']['name']} is not in the gatehouse namespace")
config = cm["data"]["gatehouse.yaml"]
store = yaml.safe_load(config)["store"]["url"]
if overlay == "single" and store != "sqlite:///var/lib/gatehouse/gatehouse.db":
    bad.append(f"single: store {store}")
if overlay == "replicas" and store != {"file": "/run/secrets/gatehouse/store-url"}:
    bad.append(f"replicas: store {store}")
# `gatehouse check` reads the keys: point the Secret's mount at the files written here.
open(config_out, "w").write(config.replace("/run/secrets/gatehouse/", secrets + "/"))
for b in bad:
    print(f"check-deploy: overlays/{overlay}: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
      fail kubernetes "overlays/$overlay does not render what it promises"
    fi
    if ! "$bin" check --config "$work/$overlay-gatehouse.yaml" >"$work/check.out" 2>&1; then
      cat "$work/check.out" >&2
      fail kubernetes "gatehouse check rejected the ConfigMap of overlays/$overlay"
    fi
  done
  say "kubernetes overlays rendered, validated and checked in $((SECONDS - t0)) s"
}

if needs kubernetes kubectl kubernetes-client; then
  check_kubernetes
fi

# ---------------------------------------------------------------- systemd
check_systemd() {
  # verify needs ExecStart's binary to exist: a copy of the unit naming the built one.
  mkdir -p "$work/systemd"
  sed "s#/usr/local/bin/gatehouse#$bin#" deploy/systemd/gatehouse.service >"$work/systemd/gatehouse.service"
  if ! systemd-analyze verify "$work/systemd/gatehouse.service" >"$work/verify.out" 2>&1 || [[ -s $work/verify.out ]]; then
    # verify exits 0 on unknown keys and bad values; any output is a problem.
    cat "$work/verify.out" >&2
    fail systemd "systemd-analyze verify found problems in deploy/systemd/gatehouse.service"
    return
  fi
  local exposure
  exposure=$(systemd-analyze security --offline=yes "$work/systemd/gatehouse.service" 2>/dev/null |
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  say "systemd unit verified; exposure level ${exposure:-?} (systemd-analyze security)"
  if [[ -n $exposure ]] && ! awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }'; then
    fail systemd "the unit's exposure level $exposure is above 2.0: a hardening line went missing"
  fi
}

if needs systemd systemd-analyze systemd; then
  check_systemd
fi

say "done in $SECONDS s${skipped:+; SKIPPED: ${skipped[*]}}"
if ((${#failures[@]})); then
  echo "check-deploy: FAILED: ${failures[*]}" >&2
  exit 1
fi
