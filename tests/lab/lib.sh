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
FLOOR=$BUILD/tools/fo-floor/fo-floor
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
    local disks_of=LAB_DISKS_$node  # another node's disks (e.g. a failing one: tests/lab/disk_test)
    echo "disks = ${!disks_of:-$dir/disk0 $dir/disk1}"
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
                "streamer_rt_priority = ${PAIR_STREAM_RT:-40}" ${PAIR_EXTRA:+"$PAIR_EXTRA"})
  # (PAIR_MISSED_SRV2: srv2 configured otherwise; the sync gives it the primary's setting)
  lab_server srv1 "${common[@]}" "max_missed_heartbeats = ${PAIR_MISSED:-3}" "failover_role = primary" "admin_ip = 10.77.0.11" \
    "partner_private_ip = 10.78.0.2" "partner_admin_ip = 10.77.0.12"
  lab_server srv2 "${common[@]}" "max_missed_heartbeats = ${PAIR_MISSED_SRV2:-${PAIR_MISSED:-3}}" "failover_role = secondary" "admin_ip = 10.77.0.12" \
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

# media_seconds FILE: the duration a player saved (ffprobe), or 0.
media_seconds() {
  local d; d=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$1" 2>/dev/null || true)
  [[ $d =~ ^[0-9.]+$ ]] && echo "$d" || echo 0
}

# pair_fault FAULT ASSET RESULT_JSON: viewers play ASSET through the pair while FAULT hits srv1
# after FAULT_AT seconds; writes one JSON line of results. The viewers, each in its own client
# namespace (skip one with NO_FFMPEG=1, NO_VLC=1, NO_RAW=1):
#   cli1 fo-verify (every packet checked against the asset, keepalives every 10 s, the control
#        connection watched), cli2 ffmpeg and cli3 VLC (as nobody: VLC refuses root) saving what
#        they play, cli4 tests/lab/rtsp_raw.py, which after the takeover sends GET_PARAMETER,
#        PAUSE, PLAY with Range and TEARDOWN on its connection and reconnects with its Session.
# Beside them `fo-floor wake` measures the host's own stalls (over 5 ms, with their times), so
# that a gap a viewer saw can be matched with a stall of the machine at the same moment.
# fault_gap_ms is the largest gap between datagrams that touches the 200 ms after the fault (what
# the failover cost the viewer); background_gap_ms the largest anywhere else; unexplained_gaps the
# gaps over one frame (33 ms) that no host stall overlaps. early_takeover: the secondary took over
# before the fault (a stall of the primary longer than the detection time).
pair_fault() {
  local fault=$1 asset=$2 out=$3 name; name=$(basename "$asset")
  local url=rtsp://$STREAM_IP:554/$name
  local go=$WORK/go-$fault
  rm -f "$go" "$WORK/ff-$fault.ts" "$WORK/vlc-$fault.ts" "$WORK/raw-$fault.json" "$WORK/probe-$fault.json"
  chmod 777 "$WORK"  # VLC runs as nobody and writes its file here
  "$LAB" exec hub -- "$FLOOR" --json wake --seconds 900 --stalls-over-ms 5 >"$WORK/probe-$fault.json" 2>/dev/null &
  local probe=$!
  "$LAB" exec cli1 -- "$VERIFY" "$url" --compare "$asset" --top-gaps 64 --keepalive 10 --json \
    >"$WORK/v-$fault.json" 2>"$WORK/v-$fault.err" &
  local vpid=$! ffpid="" vlcpid="" rawpid=""
  if [ -z "${NO_FFMPEG:-}" ]; then
    "$LAB" exec cli2 -- ffmpeg -nostdin -hide_banner -loglevel debug -rtsp_transport udp -i "$url" \
      -map 0 -c copy -f mpegts -y "$WORK/ff-$fault.ts" >"$WORK/ff-$fault.log" 2>&1 &
    ffpid=$!
  fi
  if [ -z "${NO_VLC:-}" ]; then
    "$LAB" exec cli3 -- setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp \
      cvlc -q -I dummy --no-audio --play-and-exit "$url" --sout "#std{access=file,mux=ts,dst=$WORK/vlc-$fault.ts}" \
      vlc://quit >"$WORK/vlc-$fault.log" 2>&1 &
    vlcpid=$!
  fi
  if [ -z "${NO_RAW:-}" ]; then
    "$LAB" exec cli4 -- python3 "$LAB_ROOT/tests/lab/rtsp_raw.py" "$url" --go "$go" --out "$WORK/raw-$fault.json" \
      >/dev/null 2>"$WORK/raw-$fault.err" &
    rawpid=$!
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
    handover)  # an operator's planned hand-over (tests/lab/handover_test)
      line="fault handover at_ns=$(date +%s%N)"; foctl_on srv1 stop-streaming >"$WORK/handover-$fault.out" 2>&1 || true ;;
    restart)  # kill -9, then a restart as systemd's Restart=on-failure would (it rejoins as secondary)
      line=$("$LAB" fault kill srv1 oneframed)
      ( pair_wait srv2 Primary_No_Secondary 100 >/dev/null && lab_start_daemon srv1 >/dev/null ) >"$WORK/restart.log" 2>&1 & ;;
    term)  # systemctl stop: SIGTERM to the daemon
      line="fault term at_ns=$(date +%s%N)"; kill -TERM "$(cat "/run/oneframe-lab-$OF_LAB_NAME/srv1/oneframed.pid")" ;;
    disk)  # the disk on tests/lab/eio_fs.py starts failing every read with EIO (armed by a file)
      [ -n "${EIO_ARM:-}" ] || fail "the disk fault needs EIO_ARM (tests/lab/disk_test)"
      line="fault disk at_ns=$(date +%s%N)"; touch "$EIO_ARM" ;;
    *) fail "unknown fault $fault" ;;
  esac
  local at_ns; at_ns=$(sed -n 's/.*at_ns=\([0-9]*\).*/\1/p' <<<"$line")
  # The raw client's requests go to whoever serves after the fault (or before, if none took over).
  sleep 2
  touch "$go"
  local rc_v=0 rc_ff=0 rc_vlc=0 rc_raw=0
  wait $vpid || rc_v=$?
  [ -n "$ffpid" ] && { wait "$ffpid" || rc_ff=$?; }
  [ -n "$vlcpid" ] && { wait "$vlcpid" || rc_vlc=$?; }
  [ -n "$rawpid" ] && { wait "$rawpid" || rc_raw=$?; }
  kill -INT "$probe" 2>/dev/null; wait "$probe" || true
  [ "$fault" = hang ] && "$LAB" fault resume srv1 oneframed >/dev/null
  local s2 s1; s2=$(foctl_on srv2 --json status); s1=$(foctl_on srv1 --json status 2>/dev/null || echo '{}')
  local missed=0 ccfail=0 ff_s=null vlc_s=null raw='null'
  if [ -n "$ffpid" ]; then
    missed=$(grep -c 'RTP: missed' "$WORK/ff-$fault.log" || true)
    ccfail=$(grep -c 'Continuity check failed' "$WORK/ff-$fault.log" || true)
    ff_s=$(media_seconds "$WORK/ff-$fault.ts")
  fi
  [ -n "$vlcpid" ] && vlc_s=$(media_seconds "$WORK/vlc-$fault.ts")
  [ -n "$rawpid" ] && raw=$(cat "$WORK/raw-$fault.json" 2>/dev/null || echo '{"ok":false,"error":"no result"}')
  local probe_json; probe_json=$(cat "$WORK/probe-$fault.json" 2>/dev/null); [ -n "$probe_json" ] || probe_json='{}'
  jq -c --argjson at "$at_ns" --argjson s2 "$s2" --argjson s1 "$s1" --arg fault "$fault" \
     --argjson ffmissed "$missed" --argjson ffcc "$ccfail" --argjson ff_s "$ff_s" --argjson vlc_s "$vlc_s" \
     --argjson asset_s "$(media_seconds "$asset")" --argjson raw "$raw" --argjson probe "$probe_json" '
    # A gap over one frame is explained when a host stall (the probe woke that late) overlaps it.
    def explained($g): any(($probe.stalls // [])[]; (.at_ns - .ms * 1e6) <= $g.at_ns and .at_ns >= $g.prev_ns);
    {
      fault: $fault,
      gap_ms: .timing.largest_gap.ms, nominal_ms: .timing.median_interval_ms,
      # (null-safe: a viewer that received nothing has no timing)
      gap_beyond_ms: (if .timing.largest_gap then .timing.largest_gap.ms - .timing.median_interval_ms else null end),
      gap_spans_fault: (if .timing.largest_gap then .timing.largest_gap.prev_ns <= $at and $at <= .timing.largest_gap.at_ns
                        else false end),
      fault_gap_ms: (([(.timing.top_gaps // [])[] | select(.at_ns >= $at and .prev_ns <= $at + 200e6) | .ms] | max)
                     // ((.timing.top_gaps // []) | last | .ms?)),
      background_gap_ms: (([(.timing.top_gaps // [])[] | select(.at_ns < $at or .prev_ns > $at + 200e6) | .ms] | max) // 0),
      unexplained_gaps: [(.timing.top_gaps // [])[] | select(.ms > 33) | select(explained(.) | not) | .ms],
      host_stalls: ($probe.stall_count // null), host_stall_max_ms: ($probe.max_ms // null),
      lost: .rtp.lost, duplicated: .rtp.duplicated, reordered: .rtp.reordered, cc_errors: .ts.cc_errors,
      in_order_complete: .compare.in_order_complete, datagrams: .datagrams,
      to_the_end: (.compare.end_packet != null and .compare.end_packet == .compare.source_packets),
      end_packet: .compare.end_packet, source_packets: .compare.source_packets,
      control_end: .rtsp.control_end, keepalives: .rtsp.keepalives, keepalives_answered: .rtsp.keepalives_answered,
      verify_ok: .ok,
      asset_s: $asset_s, ffmpeg_s: $ff_s, vlc_s: $vlc_s,
      ffmpeg_rtp_missed: $ffmissed, ffmpeg_cc_failed: $ffcc,
      raw_ok: $raw.ok, raw: $raw,
      takeover: ($s2.takeovers > 0), srv2_state: $s2.failover_state,
      early_takeover: ($s2.takeovers > 0 and $s2.last_detection_ns < $at),
      takeover_cause: $s2.last_takeover_cause,
      detection_ms: (if $s2.takeovers > 0 then (($s2.last_detection_ns - $at) / 1e6) else null end),
      flip_ms: (if $s2.takeovers > 0 then (($s2.last_takeover_ns - $at) / 1e6) else null end),
      resumed_from_hub: $s2.sessions_resumed_from_hub, resumed_from_heartbeat: $s2.sessions_resumed_from_heartbeat,
      connections_revived: $s2.tcp_connections_revived, connections_lost: $s2.tcp_connections_lost,
      connection_lost_why: $s2.tcp_last_connection_lost,
      # Where to look when something was lost (srv1 is gone after kill: nulls).
      end_reason, socket_drops: .receive.socket_drops, first_error_packet: .compare.first_error_packet,
      rtp_first_seq: .rtp.first_seq, rtp_last_seq: .rtp.last_seq,
      srv1_lease_drops: $s1.gate_eg_drop_lease, srv1_lease_waits: $s1.lease_waits, srv1_state: $s1.failover_state,
      srv1_tcp_held_drops: $s1.gate_eg_drop_tcp_held,
      srv2_lease_drops: $s2.gate_eg_drop_lease, srv2_fence_drops: $s2.gate_eg_drop_fence,
      srv2_announcements: $s2.takeover_announcements_sent, srv1_announcements_heard: $s1.gate_info_fence_announce,
      srv1_handovers: $s1.handovers, srv1_last_handover: $s1.last_handover, srv2_handed_over: $s2.sessions_handed_over,
      srv1_fence_drops: $s1.gate_eg_drop_fence, srv1_last_error: $s1.last_error
    }' "$WORK/v-$fault.json" >"$out"
}
