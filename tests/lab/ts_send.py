#!/usr/bin/env python3
"""Sends an MPEG-TS file over UDP, 7 packets a datagram, as raw MP2T or RTP (PT 33), paced by the
file's PCRs (each packet's send time interpolated between the PCRs around it, as a CBR server does).
A test helper for fo-verify and the lab: --drop and --dup make known faults to detect.
"""
import argparse
import socket
import struct
import sys
import time

PKT = 188


def pcr_schedule(data):
    """Send offset (s) of every packet, from the PCRs of the first PID carrying one."""
    n = len(data) // PKT
    pcrs = []  # (packet index, seconds)
    pcr_pid = None
    for i in range(n):
        p = data[i * PKT:(i + 1) * PKT]
        if p[0] != 0x47 or not (p[3] & 0x20) or p[4] < 7 or not (p[5] & 0x10):
            continue
        pid = (p[1] & 0x1F) << 8 | p[2]
        if pcr_pid is None:
            pcr_pid = pid
        if pid != pcr_pid:
            continue
        base = p[6] << 25 | p[7] << 17 | p[8] << 9 | p[9] << 1 | p[10] >> 7
        ext = (p[10] & 1) << 8 | p[11]
        pcrs.append((i, (base * 300 + ext) / 27e6))
    if len(pcrs) < 2:
        sys.exit("ts_send: fewer than two PCRs in the file: cannot pace by PCR (use --rate)")
    t = [0.0] * n
    j = 0
    for i in range(n):
        while j + 2 < len(pcrs) and pcrs[j + 1][0] <= i:
            j += 1
        (a, ta), (b, tb) = pcrs[j], pcrs[j + 1]
        t[i] = ta + (tb - ta) * (i - a) / (b - a)
    t0 = t[0]
    return [x - t0 for x in t]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("file")
    ap.add_argument("--to", required=True, help="HOST:PORT")
    ap.add_argument("--rtp", action="store_true", help="RTP (RFC 2250) instead of raw MP2T")
    ap.add_argument("--rate", type=float, default=0, help="datagrams/s instead of PCR pacing")
    ap.add_argument("--speed", type=float, default=1.0, help="faster than real time by this factor")
    ap.add_argument("--seq", type=int, default=1000, help="first RTP sequence number")
    ap.add_argument("--drop", default="", help="comma-separated datagram indices not to send")
    ap.add_argument("--dup", default="", help="comma-separated datagram indices to send twice")
    ap.add_argument("--count", type=int, default=0, help="send only this many datagrams")
    ap.add_argument("--epoch-ns", type=int, default=0,
                    help="CLOCK_REALTIME ns of datagram 0: two senders given the same epoch send the same "
                         "datagram at the same time (as the servers of a pair do)")
    ap.add_argument("--join", action="store_true",
                    help="with --epoch-ns: skip the datagrams whose time has passed (a late takeover)")
    a = ap.parse_args()

    host, port = a.to.rsplit(":", 1)
    data = open(a.file, "rb").read()
    n = len(data) // PKT
    sched = [0.0] * n if a.rate else pcr_schedule(data)
    drop = {int(x) for x in a.drop.split(",") if x}
    dup = {int(x) for x in a.dup.split(",") if x}
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = (host, int(port))
    if a.epoch_ns:
        start = a.epoch_ns / 1e9
        clock = time.time
    else:
        start = time.monotonic() + 0.05
        clock = time.monotonic
    sent = 0
    joined = False
    ndg = (n + 6) // 7
    if a.count:
        ndg = min(ndg, a.count)
    for k in range(ndg):
        payload = data[k * 7 * PKT:min(n, k * 7 + 7) * PKT]
        at = start + (k / a.rate if a.rate else sched[k * 7] / a.speed)
        delay = at - clock()
        if a.join and not joined and delay < 0:
            continue  # a slot already past: the other server had it
        joined = True
        if delay > 0:
            time.sleep(delay)  # pacing to a schedule, not waiting for a condition
        if a.rtp:
            seq = (a.seq + k) & 0xFFFF
            ts = int((at - start) * 90000) & 0xFFFFFFFF
            payload = struct.pack("!BBHII", 0x80, 33, seq, ts, 0x0F0F0F0F) + payload
        if k in drop:
            continue
        s.sendto(payload, dest)
        sent += 1
        if k in dup:
            s.sendto(payload, dest)
            sent += 1
    print(f"ts_send: {sent} datagrams to {a.to}", file=sys.stderr)


if __name__ == "__main__":
    main()
