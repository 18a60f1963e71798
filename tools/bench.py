#!/usr/bin/env python3
"""Helpers of tools/bench (see docs/bench.md).

  bench.py load HOST ASSET COUNT BASE_PORT IDS start COUNT RTP sessions (SETUP/PLAY over raw RTSP),
                                               their ids to the file IDS; one JSON line on stdout
  bench.py teardown HOST ASSET IDS             TEARDOWN every session in the file IDS
  bench.py cpu PID...                          summed utime+stime of the PIDs in seconds
  bench.py report DIR                          aggregate DIR/*.jsonl into DIR/report.md and report.json
"""
import json
import os
import socket
import statistics
import sys
import time

RTSP_TIMEOUT_S = 5.0
MAX_RESPONSE = 16384  # a response head larger than this is an error, not something to buffer


def rtsp_request(sock, buf, method, url, cseq, headers):
    req = f"{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\nUser-Agent: oneframe-bench\r\n"
    for k, v in headers.items():
        req += f"{k}: {v}\r\n"
    sock.sendall((req + "\r\n").encode())
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_RESPONSE:
            raise RuntimeError(f"{method}: response head over {MAX_RESPONSE} bytes")
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"{method}: connection closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise RuntimeError(f"{method}: bad status line {lines[0]!r}")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    length = int(hdrs.get("content-length", "0") or 0)
    if length > 65536:
        raise RuntimeError(f"{method}: body of {length} bytes")
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"{method}: connection closed in body")
        rest += chunk
    return int(parts[1]), hdrs, rest[length:]


def cmd_load(host, asset, count, base_port, ids_file):
    """SETUP + PLAY COUNT sessions, one short TCP connection each (sessions outlive connections)."""
    url = f"rtsp://{host}:554/{asset}"
    started, errors, t0, ids = 0, {}, time.time(), []
    for i in range(count):
        port = base_port + 2 * i
        try:
            with socket.create_connection((host, 554), timeout=RTSP_TIMEOUT_S) as s:
                s.settimeout(RTSP_TIMEOUT_S)
                code, h, buf = rtsp_request(s, b"", "SETUP", url + "/trackID=1", 1,
                                            {"Transport": f"RTP/AVP;unicast;client_port={port}-{port + 1}"})
                if code != 200:
                    raise RuntimeError(f"SETUP {code}")
                sid = h.get("session", "").split(";")[0]
                if not sid:
                    raise RuntimeError("SETUP: no Session")
                code, h, buf = rtsp_request(s, buf, "PLAY", url, 2, {"Session": sid})
                if code != 200:
                    raise RuntimeError(f"PLAY {code}")
                started += 1
                ids.append(sid)
        except (OSError, RuntimeError) as e:
            key = str(e)[:80]
            errors[key] = errors.get(key, 0) + 1
    with open(ids_file, "w") as f:
        f.write("\n".join(ids) + "\n")
    print(json.dumps({"requested": count, "started": started, "errors": errors,
                      "ramp_s": round(time.time() - t0, 3)}))
    return 0


def cmd_teardown(host, asset, ids_file):
    """TEARDOWN each listed session (a session at the end of its asset stays until then)."""
    url = f"rtsp://{host}:554/{asset}"
    ids = [line.strip() for line in open(ids_file) if line.strip()]
    done, errors, s, buf = 0, {}, None, b""
    for cseq, sid in enumerate(ids, 1):
        try:
            if s is None:
                s = socket.create_connection((host, 554), timeout=RTSP_TIMEOUT_S)
                s.settimeout(RTSP_TIMEOUT_S)
                buf = b""
            code, _, buf = rtsp_request(s, buf, "TEARDOWN", url, cseq, {"Session": sid})
            if code == 200:
                done += 1
            else:
                errors[str(code)] = errors.get(str(code), 0) + 1
        except (OSError, RuntimeError) as e:
            errors[str(e)[:80]] = errors.get(str(e)[:80], 0) + 1
            if s is not None:
                s.close()
            s = None
    if s is not None:
        s.close()
    print(json.dumps({"torn_down": done, "errors": errors}))
    return 0


def cmd_cpu(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass  # a process that ended: its time is gone with it
    print(f"{total / tick:.3f}")
    return 0


# ---- report ------------------------------------------------------------------------------

def read_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


# A 3.75 Mb/s session: 3.75e6 bits/s of TS in datagrams of 7 x 188 = 1316 bytes.
SESSION_DPS = 3.75e6 / (1316 * 8)


def us_per_datagram(cpu_pct, gbps):
    """CPU microseconds per datagram sent, from % of a core and the TS payload rate."""
    if not gbps:
        return None
    return cpu_pct / 100.0 / (gbps * 1e9 / 8 / 1316) * 1e6


def late_window(h0, h1):
    """The streaming thread's send lateness over a window, from two `send_late_histogram` readings:
    (upper bound in ms of the bucket holding the 99th percentile, or None past the last bound;
    % of datagrams more than 1 ms late)."""
    def parse(h):
        return [(k, int(v)) for k, v in (kv.split("=") for kv in (h or "").split())]
    a, b = parse(h0), parse(h1)
    if not a or len(a) != len(b):
        return None, None
    counts = [(k, vb - va) for (k, va), (_, vb) in zip(a, b)]
    total = sum(c for _, c in counts)
    if total <= 0:
        return None, None
    seen, p99 = 0, None
    for k, c in counts:
        seen += c
        if seen >= 0.99 * total:
            p99 = int(k[2:]) / 1000.0 if k.startswith("le") else None
            break
    over = sum(c for k, c in counts if k.startswith("gt") or int(k[2:]) > 1000)
    return p99, 100.0 * over / total


def fmt(s, digits=2, unit=""):
    if s is None:
        return "n/a"
    f = f"{{:.{digits}f}}"
    if s["n"] == 1:
        return f.format(s["median"]) + unit + " (1 run)"
    return f"{f.format(s['median'])}{unit} [{f.format(s['min'])}–{f.format(s['max'])}]"


def cmd_report(d):
    meta = json.load(open(os.path.join(d, "meta.json"))) if os.path.exists(os.path.join(d, "meta.json")) else {}
    cap = read_jsonl(os.path.join(d, "capacity.jsonl"))
    jit = read_jsonl(os.path.join(d, "jitter.jsonl"))
    base = read_jsonl(os.path.join(d, "baseline.jsonl"))
    fo = read_jsonl(os.path.join(d, "failover.jsonl"))
    floor = read_jsonl(os.path.join(d, "floor.jsonl"))
    rep = {"meta": meta}
    md = [f"# oneframe bench, {meta.get('date', '?')}", "",
          f"Machine: {meta.get('machine', '?')}; build {meta.get('build', '?')}; mode {meta.get('mode', '?')}. "
          "Figures are medians [min–max] over the runs given; the machine is shared and noisy.", ""]

    # 1. capacity
    steps = sorted({r["n"] for r in cap})
    cap_rows, largest_clean, largest_timely = [], None, None
    for n in steps:
        runs = [r for r in cap if r["n"] == n]
        clean = [r for r in runs if r["clean"]]
        # CPU and rate figures only from runs whose window saw all N sessions playing.
        timed = [r for r in runs if r.get("window_ok", True)]
        row = {"n": n, "runs": len(runs), "clean_runs": len(clean),
               "started": stats([r["started"] for r in runs]),
               "lost": stats([r["lost"] for r in runs]),
               "short": stats([r["short"] for r in runs]),
               "deadline_misses": stats([r["deadline_misses"] for r in runs]),
               "late_datagrams": stats([r["late_datagrams"] for r in runs]),
               "late_pct": stats([100.0 * r["late_datagrams"] / r["sent"] if r["sent"] else None for r in runs]),
               "gbps": stats([r["gbps"] for r in timed]),
               "cpu_pct": stats([r["cpu_pct"] for r in timed]),
               "cpu_pct_per_session": stats([r["cpu_pct"] / r["started"] if r["started"] else None for r in timed]),
               "cpu_s_per_gbit": stats([r["cpu_pct"] / 100.0 / r["gbps"] if r["gbps"] else None for r in timed]),
               "us_per_datagram": stats([us_per_datagram(r["cpu_pct"], r["gbps"]) for r in timed]),
               "machine_busy_pct": stats([r.get("machine_busy_pct") for r in timed]),
               "untimed_runs": len(runs) - len(timed)}
        cap_rows.append(row)
        if runs and len(clean) == len(runs):
            largest_clean = n
            if all(r["sent"] and r["late_datagrams"] < 0.02 * r["sent"] for r in runs):
                largest_timely = n
    rep["capacity"] = {"steps": cap_rows, "largest_clean_n": largest_clean, "largest_timely_n": largest_timely}
    md += ["## 1. Capacity of one streaming thread (3.75 Mb/s RTP sessions)", "",
           "| N | clean runs | started | lost | deadline misses | late datagrams (>1 ms) | sent Gb/s | daemon CPU % of a core | CPU % per session | CPU s per Gbit | CPU µs per datagram | machine busy % (2 cores = 200) |",
           "| ---: | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in cap_rows:
        md.append(f"| {r['n']} | {r['clean_runs']}/{r['runs']} | {fmt(r['started'], 0)} | {fmt(r['lost'], 0)} | "
                  f"{fmt(r['deadline_misses'], 0)} | {fmt(r['late_datagrams'], 0)} ({fmt(r['late_pct'], 3, '%')}) | "
                  f"{fmt(r['gbps'], 3)} | {fmt(r['cpu_pct'], 1)} | {fmt(r['cpu_pct_per_session'], 4)} | "
                  f"{fmt(r['cpu_s_per_gbit'], 3)} | {fmt(r['us_per_datagram'], 2)} | {fmt(r['machine_busy_pct'], 0)} |")
    untimed = [f"N = {r['n']}: {r['untimed_runs']} of {r['runs']}" for r in cap_rows if r["untimed_runs"]]
    if untimed:
        md += ["", "Runs left out of the CPU and rate columns (" + "; ".join(untimed) + "): the RTSP set-up of all N "
               "sessions took so long that no window in the asset saw all N playing (a saturated thread answers "
               "commands slowly); n/a where that was every run."]
    md += ["", f"**Largest clean N** (every run: all sessions started, nothing lost or unsent, no deadline miss, no send error; "
           f"late datagrams are reported, not judged): **{largest_clean if largest_clean is not None else 'none'}**; "
           f"the largest clean N with under 2 % of datagrams more than 1 ms late: "
           f"**{largest_timely if largest_timely is not None else 'none'}**", ""]

    # 1b. the floor
    if floor:
        frow = {"runs": len(floor), "us_per_datagram": stats([r["us_per_datagram"] for r in floor]),
                "datagrams_per_cpu_s": stats([r["datagrams_per_cpu_s"] for r in floor]),
                "sessions_per_core": stats([1e6 / r["us_per_datagram"] / SESSION_DPS for r in floor]),
                "uncounted": stats([r["datagrams"] - r["counted"] for r in floor])}
        rep["floor"] = frow
        md += ["## 1b. The floor: CPU per datagram of this host's kernel path (fo-floor send, unpaced sendmmsg)", "",
               "| runs | CPU µs per datagram | datagrams per CPU-second | 3.75 Mb/s sessions per core at that cost | sent but not counted |",
               "| ---: | --- | --- | --- | --- |",
               f"| {frow['runs']} | {fmt(frow['us_per_datagram'], 2)} | {fmt(frow['datagrams_per_cpu_s'], 0)} | "
               f"{fmt(frow['sessions_per_core'], 0)} | {fmt(frow['uncounted'], 0)} |", ""]
        ours = next((r for r in cap_rows if r["n"] == largest_clean), None)
        if ours and ours["us_per_datagram"]:
            ratio = ours["us_per_datagram"]["median"] / frow["us_per_datagram"]["median"]
            rep["floor"]["ours_over_floor"] = ratio
            md += [f"The streaming thread at N = {largest_clean}: {ours['us_per_datagram']['median']:.2f} µs per datagram = "
                   f"**{ratio:.2f}×** the floor (pacing, extent reads, wake-ups and a cooler cache on top of the kernel's "
                   f"send path). A 3.75 Mb/s session is {SESSION_DPS:.0f} datagrams/s.", ""]

    # 2. jitter
    sender = [late_window(r.get("send_late_hist0"), r.get("send_late_hist1")) for r in jit]
    jrow = {"runs": len(jit), "p50_ms": stats([r.get("p50_ms") for r in jit]),
            "p99_ms": stats([r.get("p99_ms") for r in jit]), "max_ms": stats([r.get("max_ms") for r in jit]),
            "lost": stats([r.get("lost") for r in jit]), "sessions": stats([r.get("sessions") for r in jit]),
            "wake_p99_ms": stats([(r.get("wake") or {}).get("p99_ms") for r in jit]),
            "wake_over_1ms_pct": stats([(r.get("wake") or {}).get("over_1ms_pct") for r in jit]),
            "wake_max_ms": stats([(r.get("wake") or {}).get("max_ms") for r in jit]),
            "sender_p99_ms": stats([w[0] for w in sender]),
            "sender_over_1ms_pct": stats([w[1] for w in sender])}
    rep["jitter"] = jrow
    md += ["## 2. Arrival jitter against the PCR schedule, one of 100 sessions (fo-verify)", "",
           "| runs | sessions running | p50 ms | p99 ms | max ms | lost |", "| ---: | --- | --- | --- | --- | --- |",
           f"| {jrow['runs']} | {fmt(jrow['sessions'], 0)} | {fmt(jrow['p50_ms'], 3)} | {fmt(jrow['p99_ms'], 3)} | "
           f"{fmt(jrow['max_ms'], 3)} | {fmt(jrow['lost'], 0)} |", ""]
    if jrow["sender_p99_ms"]:
        md += ["The streaming thread's own view over the same seconds (the difference of two `send_late_histogram` "
               "readings, every datagram of the 100 sessions: sendmmsg start minus send time): p99 at most "
               f"{fmt(jrow['sender_p99_ms'], 3)} ms (upper bound of its bucket); {fmt(jrow['sender_over_1ms_pct'], 2)} % "
               "more than 1 ms late.", ""]
    if jrow["wake_p99_ms"]:
        md += ["Beside each run, over the same seconds, this host's own floor (`fo-floor wake`: a SCHED_FIFO thread one "
               "priority above the streaming thread with something due every 1 ms, sleeping until it is due and, on "
               "waking, handling all that came due, so a stall makes every item due during it late, as it does to "
               f"datagrams): lateness p99 {fmt(jrow['wake_p99_ms'], 3)} ms, max {fmt(jrow['wake_max_ms'], 1)} ms; "
               f"{fmt(jrow['wake_over_1ms_pct'], 2)} % more than 1 ms late. Where over 1 % is, a p99 under 1 ms is beyond "
               "what this host gives any sender that sleeps between datagrams.", ""]

    # 3. baseline
    brow = {"windows": len(base), "streams": stats([r["streams"] for r in base]),
            "cpu_pct_per_stream": stats([r["cpu_pct"] / r["streams"] for r in base if r["streams"]]),
            "gbps": stats([r["gbps"] for r in base]),
            "mbps_per_stream": stats([1000.0 * r["gbps"] / r["streams"] for r in base if r["streams"]])}
    brow["streams_per_core"] = stats([100.0 / (r["cpu_pct"] / r["streams"]) for r in base if r["streams"] and r["cpu_pct"]])
    brow["cpu_s_per_gbit"] = stats([r["cpu_pct"] / 100.0 / r["gbps"] for r in base if r["gbps"]])
    brow["us_per_datagram"] = stats([r["cpu_pct"] / 100.0 * r["window_s"] / r["datagrams"] * 1e6 for r in base if r.get("datagrams")])
    rep["baseline"] = brow
    ours_row = next((r for r in cap_rows if r["n"] == largest_clean), None)
    cmp_ = {}
    if ours_row and brow["cpu_pct_per_stream"] and ours_row["cpu_pct_per_session"]:
        ours_spc = 100.0 / ours_row["cpu_pct_per_session"]["median"]
        ff_spc = brow["streams_per_core"]["median"]
        cmp_ = {"at_n": largest_clean, "ours_streams_per_core": ours_spc, "ffmpeg_streams_per_core": ff_spc,
                "streams_per_core_ratio": ours_spc / ff_spc,
                "ours_cpu_s_per_gbit": ours_row["cpu_s_per_gbit"]["median"],
                "ffmpeg_cpu_s_per_gbit": brow["cpu_s_per_gbit"]["median"] if brow["cpu_s_per_gbit"] else None}
        if cmp_["ffmpeg_cpu_s_per_gbit"]:
            cmp_["cpu_per_gbit_ratio"] = cmp_["ours_cpu_s_per_gbit"] / cmp_["ffmpeg_cpu_s_per_gbit"]
    rep["comparison"] = cmp_
    md += ["## 3. Baseline: ffmpeg -re ... -c copy -f rtp_mpegts, one process per stream", "",
           "| windows | streams | received Mb/s per stream | CPU % per stream | streams per core | CPU s per Gbit | CPU µs per datagram |",
           "| ---: | --- | --- | --- | --- | --- | --- |",
           f"| {brow['windows']} | {fmt(brow['streams'], 0)} | {fmt(brow['mbps_per_stream'], 2)} | "
           f"{fmt(brow['cpu_pct_per_stream'], 3)} | {fmt(brow['streams_per_core'], 0)} | {fmt(brow['cpu_s_per_gbit'], 2)} | "
           f"{fmt(brow['us_per_datagram'], 2)} |", ""]
    if cmp_:
        md += [f"**oneframe / ffmpeg** (oneframe at N = {cmp_['at_n']}, medians): streams per core "
               f"{cmp_['ours_streams_per_core']:.0f} vs {cmp_['ffmpeg_streams_per_core']:.0f} = "
               f"**{cmp_['streams_per_core_ratio']:.1f}×**; CPU s per Gbit {cmp_['ours_cpu_s_per_gbit']:.3f} vs "
               f"{cmp_['ffmpeg_cpu_s_per_gbit']:.3f} = **{cmp_.get('cpu_per_gbit_ratio', float('nan')):.2f}×** (lower is better)", ""]
    if "floor" in rep and brow["us_per_datagram"]:
        best = brow["us_per_datagram"]["median"] / rep["floor"]["us_per_datagram"]["median"]
        rep["floor"]["ffmpeg_over_floor"] = best
        md += [f"The ceiling, on this host, for any sender that hands the kernel datagrams one by one (no GSO): ffmpeg's "
               f"{brow['us_per_datagram']['median']:.2f} µs per datagram over the floor's "
               f"{rep['floor']['us_per_datagram']['median']:.2f} = **{best:.1f}×** the streams per core.", ""]

    # 4. failover
    def mm(s, digits=1):
        if s is None:
            return "n/a"
        f = f"{{:.{digits}f}}"
        return f"{f.format(s['median'])} / {f.format(s['max'])}"

    def clean(r):
        """Every viewer got the whole asset on its own RTSP connection: the run's verdict."""
        asset = r.get("asset_s") or 0
        return bool(r.get("in_order_complete") and r.get("to_the_end") and r.get("lost") == 0
                    and r.get("duplicated") == 0 and r.get("cc_errors") == 0 and r.get("control_end") == "teardown"
                    and r.get("raw_ok") and (r.get("ffmpeg_s") or 0) >= asset - 0.5 and (r.get("vlc_s") or 0) >= asset - 0.5
                    and not r.get("unexplained_gaps"))

    groups = []
    for r in fo:
        key = (r.get("detection", "5x3"), r["fault"])
        if key not in groups:
            groups.append(key)
    frows = []
    md += ["## 4. Failover (a pair in the lab, fault at 3 s, four viewers: fo-verify, ffmpeg, VLC, a raw RTSP client)", "",
           "| detection | fault | runs | clean | takeovers | spurious (before the fault) | detection ms | flip ms | "
           "gap at the fault beyond nominal ms | largest gap elsewhere ms | lost | dup | played min s (ffmpeg / VLC) of | "
           "RTSP connections revived / lost |",
           "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for det, f in groups:
        runs = [r for r in fo if r.get("detection", "5x3") == det and r["fault"] == f]
        ok = [r for r in runs if "error" not in r]
        tk = [r for r in ok if r.get("takeover")]
        early = [r for r in tk if r.get("early_takeover")]
        after = [r for r in tk if not r.get("early_takeover")]
        row = {"detection": det, "fault": f, "runs": len(runs), "ok_runs": len(ok),
               "clean": sum(1 for r in ok if clean(r)),
               "takeovers": len(tk), "takeover_before_fault": len(early),
               "detection_ms": stats([r.get("detection_ms") for r in after]),
               "flip_ms": stats([r.get("flip_ms") for r in after]),
               "fault_gap_beyond_ms": stats([r["fault_gap_ms"] - r["nominal_ms"] for r in ok
                                             if r.get("fault_gap_ms") is not None and r.get("nominal_ms") is not None]),
               "background_gap_ms": stats([r.get("background_gap_ms") for r in ok]),
               "lost": stats([r.get("lost") for r in ok]), "duplicated": stats([r.get("duplicated") for r in ok]),
               "ffmpeg_min_s": min([r.get("ffmpeg_s") or 0 for r in ok], default=None),
               "vlc_min_s": min([r.get("vlc_s") or 0 for r in ok], default=None),
               "asset_s": max([r.get("asset_s") or 0 for r in ok], default=None),
               "connections_revived": sum(r.get("connections_revived") or 0 for r in tk),
               "connections_lost": sum(r.get("connections_lost") or 0 for r in tk),
               "errors": [r["error"] for r in runs if "error" in r],
               "not_clean": [{k: r.get(k) for k in ("run", "lost", "duplicated", "to_the_end", "control_end", "raw_ok",
                                                      "ffmpeg_s", "vlc_s", "unexplained_gaps")} for r in ok if not clean(r)]}
        frows.append(row)
        played = (f"{row['ffmpeg_min_s']:.2f} / {row['vlc_min_s']:.2f} of {row['asset_s']:.2f}"
                  if row["ffmpeg_min_s"] is not None else "n/a")
        md.append(f"| {det} | {f} | {row['runs']} | {row['clean']} | {row['takeovers']} | {row['takeover_before_fault']} | "
                  f"{mm(row['detection_ms'])} | {mm(row['flip_ms'])} | {mm(row['fault_gap_beyond_ms'], 2)} | "
                  f"{mm(row['background_gap_ms'], 1)} | {mm(row['lost'], 0)} | {mm(row['duplicated'], 0)} | {played} | "
                  f"{row['connections_revived']} / {row['connections_lost']} |")
    # Spurious takeovers: a takeover no fault caused (before the fault; or on silence at
    # private-down, whose heartbeats still cross the stream LAN), per detection setting.
    summary = []
    for det in dict.fromkeys(d for d, _ in groups):
        rows = [r for r in fo if r.get("detection", "5x3") == det and "error" not in r]
        spurious = sum(1 for r in rows if r.get("takeover") and (r.get("early_takeover") or r["fault"] == "private-down"))
        caused = [r for r in rows if r.get("takeover") and not r.get("early_takeover") and r["fault"] != "private-down"]
        summary.append({"detection": det, "runs": len(rows), "clean": sum(1 for r in rows if clean(r)),
                        "spurious_takeovers": spurious,
                        "spurious_rate": spurious / len(rows) if rows else None,
                        "detection_ms": stats([r.get("detection_ms") for r in caused]),
                        "fault_gap_beyond_ms": stats([r["fault_gap_ms"] - r["nominal_ms"] for r in caused
                                                      if r.get("fault_gap_ms") is not None and r.get("nominal_ms") is not None])})
    md += ["", "| detection | runs | clean | spurious takeovers (rate) | detection ms of caused takeovers | gap at the fault beyond nominal ms |",
           "| --- | ---: | ---: | ---: | --- | --- |"]
    for x in summary:
        rate = f"{100 * x['spurious_rate']:.1f} %" if x["spurious_rate"] is not None else "n/a"
        md.append(f"| {x['detection']} | {x['runs']} | {x['clean']} | {x['spurious_takeovers']} ({rate}) | "
                  f"{mm(x['detection_ms'])} | {mm(x['fault_gap_beyond_ms'], 2)} |")
    rep["failover"] = frows
    rep["failover_detection"] = summary
    md += ["", "Failover cells are median / max. A run is clean when fo-verify got every source packet once, in order, to the "
           "last, its control connection ended with an answered TEARDOWN, ffmpeg and VLC saved the whole asset (within 0.5 s), "
           "the raw client's requests after the fault were all answered, and every gap over one frame coincided with a stall "
           "of the machine (fo-floor wake). Runs are never repeated. detection: fault to the secondary declaring it; flip: "
           "fault to its gate open, both over takeovers after the fault; spurious: takeovers no fault caused (before it, "
           "or on silence at private-down), a stall of the machine longer than the detection time; gap at the fault beyond "
           "nominal: the largest inter-datagram gap at the viewer touching the 200 ms after the fault, minus the median "
           "interval. private-down causes no takeover by design; stall (SIGSTOP 20 ms) may or may not.", ""]
    for row in frows:
        for e in row["errors"][:3]:
            md.append(f"- {row['detection']} {row['fault']}: a run failed: {e}")
        for nc in row["not_clean"][:3]:
            md.append(f"- {row['detection']} {row['fault']}: run {nc['run']} not clean: {json.dumps(nc)}")
    text = "\n".join(md) + "\n"
    with open(os.path.join(d, "report.md"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "report.json"), "w") as f:
        json.dump(rep, f, indent=1)
    sys.stdout.write(text)
    return 0


def main(argv):
    if len(argv) == 7 and argv[1] == "load":
        count, base = int(argv[4]), int(argv[5])
        if not (1 <= count <= 10000 and 1024 <= base and base + 2 * count <= 65535):
            print("bench.py load: COUNT 1..10000, ports in 1024..65535", file=sys.stderr)
            return 2
        return cmd_load(argv[2], argv[3], count, base, argv[6])
    if len(argv) == 5 and argv[1] == "teardown":
        return cmd_teardown(argv[2], argv[3], argv[4])
    if len(argv) >= 2 and argv[1] == "cpu":
        return cmd_cpu(argv[2:])
    if len(argv) == 3 and argv[1] == "report":
        return cmd_report(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
