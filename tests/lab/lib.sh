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

LAB_T0=$(date +%s%N)
say() { printf '%s\n' "$*"; }
section() { printf -- '--- [%6.1fs] %s\n' "$(( ($(date +%s%N) - LAB_T0) / 1000000 ))e-3" "$*"; }
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

# lab_fresh [lab up options...]: the lab taken down and built again, saying why if either fails.
lab_fresh() {
  "$LAB" down >"$WORK/lab-down.log" 2>&1 || { cat "$WORK/lab-down.log"; fail "tools/lab down"; }
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

jq_check() {  # jq_check DESCRIPTION FILE JQ-EXPRESSION [JQ-ARGS...] (must be true)
  local what=$1 file=$2 expr=$3; shift 3
  if [ "$(jq -r "$@" "$expr" "$file")" = "true" ]; then say "ok: $what"
  else say "FAIL: $what ($expr)"; jq -c . "$file" | head -c 3000; echo; exit 1; fi
}

# ---- failover pair -------------------------------------------------------------------------
# took_over_on_silence NODE: NODE took over because its partner fell silent (a stall, or a fault).
took_over_on_silence() {
  foctl_on "$1" --json status | jq -e '.takeovers > 0 and (.last_takeover_cause | startswith("missed"))' >/dev/null
}

# pair_up ASSET: srv1 primary and srv2 secondary with a shared key, the asset ingested on both,
# the secondary synchronized and streaming: Primary / Secondary. Returns 2 if a stall of the
# machine made srv2 take over on the way (start again).
pair_up() {
  local asset=$1
  # A fresh pair: no gate state (role, lease, fence, ingress record, counters) pinned by the
  # previous pair of this test run; a restarted daemon (failback) keeps its pins on purpose.
  rm -rf "/sys/fs/bpf/$OF_LAB_NAME-srv1" "/sys/fs/bpf/$OF_LAB_NAME-srv2"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/peer.key"
  local common=("peer_key_file = $WORK/peer.key" "failover_heartbeat_freq_ms = ${PAIR_HB_MS:-5}"
                "max_missed_heartbeats = ${PAIR_MISSED:-3}" "streamer_rt_priority = ${PAIR_STREAM_RT:-40}")
  lab_server srv1 "${common[@]}" "failover_role = primary" "admin_ip = 10.77.0.11" \
    "partner_private_ip = 10.78.0.2" "partner_admin_ip = 10.77.0.12"
  lab_server srv2 "${common[@]}" "failover_role = secondary" "admin_ip = 10.77.0.12" \
    "partner_private_ip = 10.78.0.1" "partner_admin_ip = 10.77.0.11"
  foctl_on srv1 asset add "$asset" --name "$(basename "$asset")" >/dev/null
  foctl_on srv2 asset add "$asset" --name "$(basename "$asset")" >/dev/null
  foctl_on srv2 failover-sync >/dev/null || fail "failover-sync on srv2"
  foctl_on srv2 start-streaming >/dev/null || fail "start-streaming on srv2"
  if ! { pair_wait srv1 Primary && pair_wait srv2 Secondary; }; then
    # A stall of the machine can make srv2 take over (cleanly) while the pair comes up: returns 2
    # so that the caller can start again; anything else is a failure.
    if took_over_on_silence srv2; then
      say "note: a stall made srv2 take over while the pair came up"
      return 2
    fi
    fail "the pair did not reach Primary/Secondary"
  fi
}

# fresh_pair ASSET [lab up options...]: the lab built again and a new pair on it, from empty data
# directories; returns what pair_up returns (2: a stall spoiled it, start again).
fresh_pair() {
  local asset=$1; shift
  lab_fresh "$@"
  rm -rf "$WORK/srv1" "$WORK/srv2"
  pair_up "$asset"
}

state_of() { foctl_on "$1" --json status 2>/dev/null | jq -r .failover_state; }

pair_wait() {  # pair_wait NODE STATE [tries of 50 ms]
  local i
  for i in $(seq 1 "${3:-100}"); do
    [ "$(state_of "$1")" = "$2" ] && return 0
    sleep 0.05  # poll the state, bounded by the loop
  done
  say "$1 is $(state_of "$1"), not $2"; return 1
}

# pair_fault FAULT ASSET RESULT_JSON: a viewer (fo-verify, cli1) and ffmpeg (cli2) play ASSET
# through the pair; FAULT hits srv1 after FAULT_AT seconds; writes one JSON line of results.
# fault_gap_ms is the largest gap between datagrams that touches the 200 ms after the fault (what
# the failover cost the viewer); background_gap_ms the largest anywhere else (the machine's own
# scheduling stalls: the lab shares two cores with everything else). early_takeover: the
# secondary took over before the fault (a stall of the primary longer than the detection time).
pair_fault() {
  local fault=$1 asset=$2 out=$3 name; name=$(basename "$asset")
  local url=rtsp://$STREAM_IP:554/$name
  "$LAB" exec cli1 -- "$VERIFY" "$url" --compare "$asset" --top-gaps 64 --json >"$WORK/v-$fault.json" 2>"$WORK/v-$fault.err" &
  local vpid=$!
  local ffpid=""
  if [ -z "${NO_FFMPEG:-}" ]; then
    "$LAB" exec cli2 -- ffmpeg -nostdin -hide_banner -loglevel debug -rtsp_transport udp -i "$url" \
      -map 0 -c copy -f mpegts -y "$WORK/ff-$fault.ts" >"$WORK/ff-$fault.log" 2>&1 &
    ffpid=$!
  fi
  sleep "${FAULT_AT:-3}"  # let the stream run before the fault
  local line
  case $fault in
    kill) line=$("$LAB" fault kill srv1 oneframed) ;;
    hang) line=$("$LAB" fault hang srv1 oneframed) ;;
    stall) line=$("$LAB" fault stall srv1 oneframed "${STALL_MS:-20}") ;;
    stream-down) line=$("$LAB" fault stream-down srv1) ;;
    private-down) line=$("$LAB" fault private-down srv1) ;;
    dark) line=$("$LAB" fault dark srv1) ;;
    *) fail "unknown fault $fault" ;;
  esac
  local at_ns; at_ns=$(sed -n 's/.*at_ns=\([0-9]*\).*/\1/p' <<<"$line")
  wait $vpid || true
  [ -n "$ffpid" ] && { wait "$ffpid" || true; }
  [ "$fault" = hang ] && "$LAB" fault resume srv1 oneframed >/dev/null
  local s2 s1; s2=$(foctl_on srv2 --json status); s1=$(foctl_on srv1 --json status 2>/dev/null || echo '{}')
  local missed=0 ccfail=0
  if [ -z "${NO_FFMPEG:-}" ]; then
    missed=$(grep -c 'RTP: missed' "$WORK/ff-$fault.log" || true)
    ccfail=$(grep -c 'Continuity check failed' "$WORK/ff-$fault.log" || true)
  fi
  jq -c --argjson at "$at_ns" --argjson s2 "$s2" --argjson s1 "$s1" --arg fault "$fault" \
     --argjson ffmissed "$missed" --argjson ffcc "$ccfail" '{
      fault: $fault,
      gap_ms: .timing.largest_gap.ms, nominal_ms: .timing.median_interval_ms,
      # (null-safe: a viewer that received nothing has no timing)
      gap_beyond_ms: (if .timing.largest_gap then .timing.largest_gap.ms - .timing.median_interval_ms else null end),
      gap_spans_fault: (if .timing.largest_gap then .timing.largest_gap.prev_ns <= $at and $at <= .timing.largest_gap.at_ns
                        else false end),
      fault_gap_ms: (([(.timing.top_gaps // [])[] | select(.at_ns >= $at and .prev_ns <= $at + 200e6) | .ms] | max)
                     // ((.timing.top_gaps // []) | last | .ms?)),
      background_gap_ms: (([(.timing.top_gaps // [])[] | select(.at_ns < $at or .prev_ns > $at + 200e6) | .ms] | max) // 0),
      lost: .rtp.lost, duplicated: .rtp.duplicated, reordered: .rtp.reordered, cc_errors: .ts.cc_errors,
      in_order_complete: .compare.in_order_complete, datagrams: .datagrams,
      ffmpeg_rtp_missed: $ffmissed, ffmpeg_cc_failed: $ffcc,
      takeover: ($s2.takeovers > 0), srv2_state: $s2.failover_state,
      early_takeover: ($s2.takeovers > 0 and $s2.last_detection_ns < $at),
      takeover_cause: $s2.last_takeover_cause,
      detection_ms: (if $s2.takeovers > 0 then (($s2.last_detection_ns - $at) / 1e6) else null end),
      flip_ms: (if $s2.takeovers > 0 then (($s2.last_takeover_ns - $at) / 1e6) else null end),
      resumed_from_hub: $s2.sessions_resumed_from_hub, resumed_from_heartbeat: $s2.sessions_resumed_from_heartbeat,
      # Where to look when something was lost (srv1 is gone after kill: nulls).
      end_reason, socket_drops: .receive.socket_drops, first_error_packet: .compare.first_error_packet,
      rtp_first_seq: .rtp.first_seq, rtp_last_seq: .rtp.last_seq,
      srv1_lease_drops: $s1.gate_eg_drop_lease, srv1_lease_waits: $s1.lease_waits, srv1_state: $s1.failover_state,
      srv2_lease_drops: $s2.gate_eg_drop_lease, srv2_fence_drops: $s2.gate_eg_drop_fence
    }' "$WORK/v-$fault.json" >"$out"
}
