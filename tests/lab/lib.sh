# Shared by the lab tests, tools/demo and tools/bench: run oneframed servers in the lab's
# namespaces, each with its own private D-Bus, failover holder and state, and clean up after.
# Source it, then call lab_init NAME. Needs root; everything lives in namespaces and /tmp.

LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB=$LAB_ROOT/tools/lab
BUILD=${OF_BUILD:-$LAB_ROOT/build}
FOCTL=$BUILD/tools/foctl/foctl
VERIFY=$BUILD/tools/fo-verify/fo-verify
ONEFRAMED=$BUILD/userspace/daemon/oneframed
HOLDER=$BUILD/tools/fo-holder/fo-holder
STREAM_IP=10.77.0.1

say() { printf '%s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; exit 1; }
check() {  # check DESCRIPTION COMMAND...: runs COMMAND, fails the test with DESCRIPTION if it fails
  local what=$1; shift
  if "$@"; then say "ok: $what"; else fail "$what"; fi
}

lab_init() {  # lab_init NAME [lab up options...]
  export OF_LAB_NAME=$1; shift
  WORK=/tmp/$OF_LAB_NAME-work
  rm -rf "$WORK"; mkdir -p "$WORK"
  trap lab_cleanup EXIT
  "$LAB" down >/dev/null 2>&1 || true
  "$LAB" up "$@" >"$WORK/lab-up.log" 2>&1 || { cat "$WORK/lab-up.log"; fail "tools/lab up $*"; }
}

lab_cleanup() {
  local rc=$?
  if [ $rc -ne 0 ] && [ -d "$WORK" ]; then
    for log in /run/oneframe-lab-"$OF_LAB_NAME"/*/oneframed.log; do
      [ -f "$log" ] && { say "--- $log (last 30 lines)"; tail -30 "$log"; }
    done
  fi
  "$LAB" down >/dev/null 2>&1 || true
  for d in /sys/fs/bpf/"$OF_LAB_NAME"-*; do [ -e "$d" ] && rm -rf "$d"; done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
  exit $rc
}

bus_of() { echo "unix:path=$WORK/$1/bus"; }
foctl_on() { local node=$1; shift; ONEFRAME_BUS=$(bus_of "$node") "$FOCTL" "$@"; }

# lab_server NODE [config lines...]: starts dbus-daemon, fo-holder and oneframed in NODE and
# waits until the daemon answers on its bus. Extra lines are appended to its config.
lab_server() {
  local node=$1; shift
  local dir=$WORK/$node
  mkdir -p "$dir/run"
  cat >"$dir/bus.conf" <<EOC
<busconfig><type>custom</type><listen>unix:path=$dir/bus</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/></policy>
</busconfig>
EOC
  {
    echo "stream_interface = stream0"
    echo "stream_ip = $STREAM_IP"
    echo "catalog_dir = $dir/catalog"
    echo "disks = $dir/disk0 $dir/disk1"
    echo "dbus_address = unix:path=$dir/bus"
    echo "run_dir = $dir/run"
    echo "bpf_pin_root = /sys/fs/bpf/$OF_LAB_NAME-$node"
    echo "mpeg_stream_count_limit = ${LAB_STREAM_LIMIT:-16}"
    echo "failover_backend = userspace"
    for line in "$@"; do echo "$line"; done
  } >"$dir/oneframed.conf"
  "$LAB" spawn "$node" bus -- dbus-daemon --nofork --config-file="$dir/bus.conf" >/dev/null
  "$LAB" spawn "$node" holder -- "$HOLDER" --socket "$dir/run/failover.sock" >/dev/null
  lab_start_daemon "$node"
}

lab_start_daemon() {  # (re)starts oneframed in NODE with its existing config
  local node=$1 dir=$WORK/$1
  "$LAB" spawn "$node" oneframed -- "$ONEFRAMED" --config "$dir/oneframed.conf" >/dev/null
  local i pidfile=/run/oneframe-lab-$OF_LAB_NAME/$node/oneframed.pid
  for i in $(seq 1 200); do
    foctl_on "$node" status >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null || break  # it exited: say why now
    sleep 0.1  # poll the bus, bounded by the loop
  done
  "$LAB" logs "$node" oneframed | tail -20
  fail "oneframed in $node did not come up"
}

# verify_on CLIENT ARGS...: fo-verify in a client namespace; JSON on stdout.
verify_on() { local node=$1; shift; "$LAB" exec "$node" -- "$VERIFY" "$@"; }

jq_check() {  # jq_check DESCRIPTION FILE JQ-EXPRESSION (must be true)
  local what=$1 file=$2 expr=$3
  if [ "$(jq -r "$expr" "$file")" = "true" ]; then say "ok: $what"
  else say "FAIL: $what ($expr)"; jq -c . "$file" | head -c 3000; echo; exit 1; fi
}
