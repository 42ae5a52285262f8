#!/usr/bin/env python3
"""Stream soak: a producer four times faster than its consumer, for minutes
(see docs/benchmarks.md, section "Streams"). A long mode, not part of make test.

The script starts its own cisternd (temp runtime_dir and state_dir, metrics_port
0, its own arena: a small tier, default 512 MiB) and opens one stream with
high/low watermarks (default 128 / 96 MiB). Then:

  calibration  the producer process puts bursts of 1 MiB samples (Stream.put) into
               a side stream with no watermark, timing only the puts, and drains
               them itself between bursts; its unthrottled rate R = samples / put
               seconds. The consumer's rate is set to R / --ratio (default 4).
  baseline     the daemon's object count and tier used bytes, after calibration.
  soak         the producer Stream.put()s 1 MiB samples as fast as the stream lets
               it (timeout --put-timeout; a put that times out is retried with the
               same sample id); the consumer (own process) takes batches of 8 with a
               StreamLoader (durable step-numbered acks, which free the samples at
               once), checks each sample's values, and paces itself to R / ratio
               samples/s. The parent samples the stream's stat and the daemon's
               stats every --sample-ms (100 ms) and keeps the maxima.
  drain        after --minutes the producer stops; the consumer then drains at full
               speed (a StreamLoader until a batch comes up short, then lease/ack of
               what is left) and the parent waits until the daemon is back at the
               baseline (at most 10 s).

Checks (exit status 1 if any fails):
  * max stream resident_bytes <= high watermark + one sample. A commit is admitted
    while the stream is not paused, i.e. while resident < high, so one commit can
    overshoot high by its own size (docs/streams.md, "Backpressure"); Stream.put
    commits one sample at a time, so the bound is high + one sample's object size.
  * max tier used_bytes <= the tier's capacity.
  * backpressure engaged: producer_waits > 0.
  * after the drain: depth, in_flight, awaiting_durable and resident_bytes all 0;
    the daemon's object count and tier used bytes exactly the baseline.
  * every committed sample consumed exactly once, every value right.
The maxima come from polling: an excursion shorter than --sample-ms between two
polls is not seen.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/stream_soak.py \\
        --build build/release --minutes 10 --json build/release/stream_soak.json
"""

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_bench import MiB, Daemon, _read, _sample_shapes, loadavg, log  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXACT = 1 << 24  # float32 holds integers exactly up to here: the value a sample carries


def _sample(nbytes):
    import torch
    hs, ls = _sample_shapes(nbytes)
    return {"hidden": torch.randn(hs), "logits": torch.randn(ls).half()}


def _producer(ctl, socket, name, opts, stop):
    import cistern
    client = cistern.connect(socket)
    sample = _sample(opts["sample_bytes"])
    ctl.send("imported")

    # Calibration: bursts that stay below the soak's high watermark, into a side stream
    # without backpressure; only the puts are timed.
    calib = cistern.Stream(client, name + "-calibrate", high_watermark_bytes=0)
    burst = max(8, opts["high_bytes"] // 2 // opts["sample_bytes"])
    put_s, n, i = 0.0, 0, 0
    while put_s < opts["calibrate_s"]:
        t0 = time.perf_counter()
        for _ in range(burst):
            sample["hidden"][0, 0] = float(i % EXACT)
            calib.put(f"{i:09d}", sample, timeout=opts["put_timeout"])
            i += 1
        put_s += time.perf_counter() - t0
        n += burst
        refs = calib.lease(burst)
        calib.ack(refs, optimizer_durable=True)  # step-less and durable: freed at once
    info = calib.stat()
    if any(info[k] for k in ("depth", "in_flight", "awaiting_durable", "resident_bytes")):
        raise RuntimeError(f"calibration stream not empty: {info}")
    ctl.send({"calibration_samples": n, "calibration_put_s": put_s, "rate": n / put_s})

    stream = cistern.Stream(client, name)
    ctl.recv()  # go
    i = rejections = 0
    waits_over_10ms = 0
    longest = 0.0
    nbytes = 0
    slow = []  # (seconds into the soak, put seconds) of puts over 250 ms
    t_start = time.monotonic()
    while not stop.is_set():
        sample["hidden"][0, 0] = float(i % EXACT)
        t0 = time.perf_counter()
        try:
            ref = stream.put(f"{i:09d}", sample, timeout=opts["put_timeout"])
        except MemoryError:
            rejections += 1  # backpressure outlasted the timeout: retry the same id
            continue
        dt = time.perf_counter() - t0
        longest = max(longest, dt)
        waits_over_10ms += dt > 0.010
        if dt > 0.25 and len(slow) < 1000:
            slow.append((round(time.monotonic() - t_start, 3), round(dt, 3)))
        nbytes = max(nbytes, ref.nbytes)
        i += 1
    ctl.send({"produced": i, "rejections": rejections, "seconds": time.monotonic() - t_start,
              "longest_put_s": longest, "puts_over_10ms": waits_over_10ms,
              "sample_object_bytes": nbytes, "slow_puts": slow})


def _consumer(ctl, socket, name, batch_size, drain):
    import torch  # noqa: F401  (here, not lazily inside the first timed get)
    import cistern
    client = cistern.connect(socket)
    stream = cistern.Stream(client, name)
    ctl.send("imported")
    rate = ctl.recv()  # samples/s, or the go signal of a calibrated run
    seen = bytearray()
    consumed = bad = duplicates = short_batches = 0
    slept = 0.0
    slow = []  # (seconds into the soak, seconds) of next-batch calls over 250 ms

    def take(ref, tensors):
        nonlocal bad, duplicates
        i = int(ref.sample_id)
        _, ok = _read(tensors, i % EXACT)
        bad += not ok
        if i >= len(seen):
            seen.extend(bytes(max(i + 1 - len(seen), 65536)))
        duplicates += seen[i] > 0
        seen[i] = 1

    loader = cistern.StreamLoader(stream, batch_size, timeout=1.0, as_="torch",
                                  optimizer_durable=True)
    t_start = time.monotonic()
    drain_start = None
    while True:
        draining = drain.is_set()
        if draining and drain_start is None:
            drain_start = time.monotonic()
        t_next = time.monotonic()
        try:
            batch = next(loader)  # acks the previous batch first
        except StopIteration:
            batch = None
        if time.monotonic() - t_next > 0.25 and len(slow) < 1000:
            slow.append((round(t_next - t_start, 3), round(time.monotonic() - t_next, 3)))
        if batch is None:
            short_batches = loader.short_batches
            if draining:
                break
            continue
        for ref, tensors in zip(batch.refs, batch.samples):
            take(ref, tensors)
        consumed += len(batch)
        del tensors, batch
        if not draining:
            wait = t_start + consumed / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
                slept += wait
    loader.close()
    step = loader.step or 0
    while True:  # the tail: fewer than a batch
        refs = stream.lease(batch_size, timeout=0.2)
        if not refs:
            info = stream.stat()
            if info["depth"] == 0 and info["in_flight"] == 0:
                break
            continue
        for ref in refs:
            tensors = client.get(ref.key, generation=ref.generation, as_="torch")
            take(ref, tensors)
            del tensors
        consumed += len(refs)
        step += 1
        stream.ack(refs, global_step=step, optimizer_durable=True)
    end = time.monotonic()
    highest = len(seen) - 1
    while highest >= 0 and not seen[highest]:
        highest -= 1
    ctl.send({"consumed": consumed, "bad": bad, "duplicates": duplicates, "highest_id": highest,
              "missing_below_highest": seen[:highest + 1].count(0),
              "short_batches": short_batches, "slept_s": slept, "slow_batches": slow,
              "seconds": (drain_start or end) - t_start,
              "drain_s": end - drain_start if drain_start else 0.0})


def daemon_rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) * 1024
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build/release"),
                    help="build tree with src/daemon/cisternd (default build/release)")
    ap.add_argument("--minutes", type=float, default=10.0, help="soak length (10; 0.5 allowed)")
    ap.add_argument("--tier-mib", type=int, default=512, help="the daemon's tier (512 MiB)")
    ap.add_argument("--high-mib", type=int, default=128, help="high watermark (128 MiB)")
    ap.add_argument("--low-mib", type=int, default=96, help="low watermark (96 MiB)")
    ap.add_argument("--sample-mib", type=float, default=1.0, help="sample size (1 MiB)")
    ap.add_argument("--batch", type=int, default=8, help="consumer batch (8)")
    ap.add_argument("--ratio", type=float, default=4.0,
                    help="producer's unthrottled rate / consumer's rate (4)")
    ap.add_argument("--consumer-rate", type=float,
                    help="fixed consumer rate in samples/s instead of the calibrated one")
    ap.add_argument("--calibrate-s", type=float, default=3.0,
                    help="seconds of timed puts in the calibration (3)")
    ap.add_argument("--put-timeout", type=float, default=30.0,
                    help="Stream.put timeout, seconds (30)")
    ap.add_argument("--sample-ms", type=float, default=100.0, help="stat polling period (100 ms)")
    ap.add_argument("--json", help="write the results here")
    opts = ap.parse_args()

    import cistern
    high, low = opts.high_mib * MiB, opts.low_mib * MiB
    sample_bytes = int(opts.sample_mib * MiB)
    name = "soak"
    t_begin = time.monotonic()
    out = {"options": vars(opts), "argv": sys.argv, "load_start": loadavg(),
           "cpus": os.cpu_count()}
    log(f"stream_soak: {opts.minutes} min, tier {opts.tier_mib} MiB, watermarks "
        f"{opts.high_mib}/{opts.low_mib} MiB, samples of {sample_bytes} bytes, consumer batch "
        f"{opts.batch}, ratio {opts.ratio}; load average {out['load_start']}")

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctx = multiprocessing.get_context("spawn")
    stop, drain = ctx.Event(), ctx.Event()
    procs = []
    daemon = None
    failed = []
    try:
        daemon = Daemon(opts.build, opts.tier_mib * MiB, "soak")
        client = cistern.connect(daemon.socket)
        stream = cistern.Stream(client, name, high_watermark_bytes=high, low_watermark_bytes=low,
                                lease_timeout=60)
        log(f"cisternd pid {daemon.proc.pid}, arena {daemon.arena}, runtime dir {daemon.dir}")
        p_ctl, p_child = ctx.Pipe()
        c_ctl, c_child = ctx.Pipe()
        popts = {"sample_bytes": sample_bytes, "high_bytes": high, "calibrate_s": opts.calibrate_s,
                 "put_timeout": opts.put_timeout}
        procs = [ctx.Process(target=_producer, args=(p_child, daemon.socket, name, popts, stop)),
                 ctx.Process(target=_consumer, args=(c_child, daemon.socket, name, opts.batch,
                                                     drain))]
        for p in procs:
            p.start()

        def recv(ctl, what, timeout):
            if not ctl.poll(timeout):
                raise RuntimeError(f"no answer from the {what} in {timeout} s")
            return ctl.recv()

        recv(p_ctl, "producer", 120)
        recv(c_ctl, "consumer", 120)
        cal = recv(p_ctl, "producer (calibration)", 300)
        rate = opts.consumer_rate or cal["rate"] / opts.ratio
        out["calibration"] = cal
        out["consumer_rate_target"] = rate
        log(f"calibration: {cal['calibration_samples']} puts in {cal['calibration_put_s']:.3f} s "
            f"-> unthrottled producer {cal['rate']:.1f} samples/s; consumer paced at "
            f"{rate:.1f} samples/s")

        deadline = time.monotonic() + 10
        while True:  # calibration's frees have landed
            st = client.stats()
            if st["deferred_frees"] == 0 and st["objects"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        base = {"objects": st["objects"], "used_bytes": st["tiers"][0]["used_bytes"]}
        capacity = st["tiers"][0]["capacity_bytes"]
        out["baseline"] = base
        out["daemon_rss_start"] = daemon_rss(daemon.proc.pid)
        log(f"baseline: {base['objects']} objects, {base['used_bytes']} bytes used of "
            f"{capacity}; daemon RssAnon {out['daemon_rss_start']['RssAnon'] / MiB:.1f} MiB")

        mx = {"resident_bytes": 0, "used_bytes": 0, "depth": 0, "in_flight": 0,
              "awaiting_durable": 0}
        polls = paused_polls = 0
        seconds = []  # one row per second
        row = None
        period = opts.sample_ms / 1000.0

        def poll(t):
            nonlocal polls, paused_polls, row
            info = stream.stat()
            ds = client.stats()
            used = ds["tiers"][0]["used_bytes"]
            polls += 1
            paused_polls += bool(info["paused"])
            for k in ("resident_bytes", "depth", "in_flight", "awaiting_durable"):
                mx[k] = max(mx[k], info[k])
            mx["used_bytes"] = max(mx["used_bytes"], used)
            sec = int(t)
            if row is None or row["t"] != sec:
                row = {"t": sec, "resident_max": 0, "resident_min": info["resident_bytes"],
                       "used_max": 0, "paused_polls": 0, "polls": 0}
                seconds.append(row)
            row["resident_max"] = max(row["resident_max"], info["resident_bytes"])
            row["resident_min"] = min(row["resident_min"], info["resident_bytes"])
            row["used_max"] = max(row["used_max"], used)
            row["paused_polls"] += bool(info["paused"])
            row["polls"] += 1
            row.update(committed=info["committed"], acked=info["acked"],
                       producer_waits=info["producer_waits"],
                       producer_rejections=info["producer_rejections"], objects=ds["objects"])
            return info

        loads = []
        c_ctl.send(rate)
        p_ctl.send("go")
        t0 = time.monotonic()
        end = t0 + opts.minutes * 60
        next_poll, next_minute = t0, t0 + 60
        while time.monotonic() < end:
            poll(time.monotonic() - t0)
            if any(not p.is_alive() for p in procs):
                raise RuntimeError("the producer or the consumer died during the soak")
            now = time.monotonic()
            if now >= next_minute:
                loads.append({"t": now - t0, "load": loadavg()})
                next_minute += 60
            next_poll += period
            time.sleep(max(0.0, min(next_poll, end) - time.monotonic()))
        stop.set()
        t_stop = time.monotonic()
        while not p_ctl.poll(0):  # the producer finishes its last put
            poll(time.monotonic() - t0)
            if time.monotonic() - t_stop > opts.put_timeout + 30:
                raise RuntimeError("the producer did not stop")
            time.sleep(period)
        prod = p_ctl.recv()
        drain.set()
        t_drain = time.monotonic()
        while not c_ctl.poll(0):
            poll(time.monotonic() - t0)
            if time.monotonic() - t_drain > 300:
                raise RuntimeError("the consumer did not drain")
            time.sleep(period)
        cons = c_ctl.recv()
        for p in procs:
            p.join(30)
        final = poll(time.monotonic() - t0)
        t_settle = time.monotonic()
        while True:
            st = client.stats()
            now_ = {"objects": st["objects"], "used_bytes": st["tiers"][0]["used_bytes"]}
            if now_ == base or time.monotonic() - t_settle > 10:
                break
            time.sleep(0.01)
        settle_s = time.monotonic() - t_settle
        out["daemon_rss_end"] = daemon_rss(daemon.proc.pid)
        out["load_end"] = loadavg()
        out["loads"] = loads
        out.update(producer=prod, consumer=cons, final_stream=final, final_daemon=now_,
                   maxima=mx, polls=polls, paused_polls=paused_polls, seconds=seconds,
                   settle_s=settle_s, capacity_bytes=capacity)

        # -- report ---------------------------------------------------------------
        soak_s = prod["seconds"]
        log(f"\n== Stream soak: {opts.minutes} min, polled every {opts.sample_ms:.0f} ms "
            f"({polls} polls) ==")
        log("   minute  committed  acked    samples/s  resident MiB (min-max)  tier used max MiB"
            "  paused polls  producer waits  load average")
        for m in sorted({r["t"] // 60 for r in seconds}):
            rows = [r for r in seconds if r["t"] // 60 == m]
            prev = ([r for r in seconds if r["t"] < m * 60] or [{"committed": 0, "acked": 0}])[-1]
            last = rows[-1]
            span = max(1, last["t"] - (prev["t"] if "t" in prev else -1))
            la = next((x["load"] for x in loads if x["t"] >= (m + 1) * 60 - 1), out["load_end"])
            log(f"   {m + 1:6} {last['committed'] - prev['committed']:10} "
                f"{last['acked'] - prev['acked']:6} "
                f"{(last['acked'] - prev['acked']) / span:11.1f}  "
                + f"{min(r['resident_min'] for r in rows) / MiB:.1f}-"
                  f"{max(r['resident_max'] for r in rows) / MiB:.1f}".rjust(22)
                + f"{max(r['used_max'] for r in rows) / MiB:19.1f}"
                  f"{sum(r['paused_polls'] for r in rows):14}"
                  f"{last['producer_waits']:16}  {la}")
        one = prod["sample_object_bytes"]
        log(f"\n   producer: {prod['produced']} samples in {soak_s:.1f} s "
            f"({prod['produced'] / soak_s:.1f}/s; unthrottled {cal['rate']:.1f}/s, "
            f"{cal['rate'] / (prod['produced'] / soak_s):.2f}x what it got), "
            f"{prod['rejections']} puts timed out and retried, longest put "
            f"{prod['longest_put_s'] * 1e3:.1f} ms, {prod['puts_over_10ms']} puts over 10 ms; "
            f"a sample's object is {one} bytes")
        log(f"   consumer: {cons['consumed']} samples, {cons['consumed'] / (cons['seconds'] + cons['drain_s']):.1f}/s "
            f"overall (target {rate:.1f}/s while the producer ran), slept {cons['slept_s']:.1f} s, "
            f"drain {cons['drain_s']:.2f} s, {cons['short_batches']} short batches requeued, "
            f"{cons['bad']} wrong values, {cons['duplicates']} duplicates")
        log(f"   puts over 250 ms (s into the soak, s): {len(prod['slow_puts'])} "
            + " ".join(f"{a}:{b}" for a, b in prod["slow_puts"][:20]))
        log(f"   consumer's next-batch calls over 250 ms: {len(cons['slow_batches'])} "
            + " ".join(f"{a}:{b}" for a, b in cons["slow_batches"][:20]))
        log(f"   stream: committed {final['committed']}, acked {final['acked']}, producer_waits "
            f"{final['producer_waits']}, producer_rejections {final['producer_rejections']}, "
            f"consumer_starved {final['consumer_starved']}, consumer_empty "
            f"{final['consumer_empty']}, expired leases {final['expired_leases']}, requeued "
            f"{final['requeued']}; paused in {paused_polls} of {polls} polls")
        # RssAnon: VmRSS also counts the arena, which the daemon pre-faults at start.
        log(f"   daemon RssAnon {out['daemon_rss_start']['RssAnon'] / MiB:.1f} MiB at the start, "
            f"{out['daemon_rss_end']['RssAnon'] / MiB:.1f} MiB at the end; back at the baseline "
            f"{settle_s * 1e3:.0f} ms after the consumer finished")

        checks = []

        def check(what, measured, limit, ok):
            checks.append({"check": what, "measured": measured, "limit": limit, "ok": bool(ok)})

        check("max resident_bytes <= high watermark + one sample", mx["resident_bytes"],
              high + one, mx["resident_bytes"] <= high + one)
        check("max tier used_bytes <= tier capacity", mx["used_bytes"], capacity,
              mx["used_bytes"] <= capacity)
        check("backpressure engaged: producer_waits > 0", final["producer_waits"], "> 0",
              final["producer_waits"] > 0)
        for k in ("depth", "in_flight", "awaiting_durable", "resident_bytes"):
            check(f"after drain: stream {k} == 0", final[k], 0, final[k] == 0)
        check("after drain: daemon objects == baseline", now_["objects"], base["objects"],
              now_["objects"] == base["objects"])
        check("after drain: tier used_bytes == baseline", now_["used_bytes"], base["used_bytes"],
              now_["used_bytes"] == base["used_bytes"])
        check("committed == produced == consumed", f"{final['committed']} / {prod['produced']} / "
              f"{cons['consumed']}", "equal",
              final["committed"] == prod["produced"] == cons["consumed"] == final["acked"])
        check("no sample twice, none missing, no wrong value",
              f"{cons['duplicates']} / {cons['missing_below_highest']} / {cons['bad']}", "0 / 0 / 0",
              cons["duplicates"] == cons["missing_below_highest"] == cons["bad"] == 0
              and cons["highest_id"] == prod["produced"] - 1)
        out["checks"] = checks
        log("\n== Checks ==")
        for c in checks:
            log(f"   {c['check']:<52} {str(c['measured']):>24}  limit {str(c['limit']):<12} "
                f"{'ok' if c['ok'] else 'FAILED'}")
        failed = [c for c in checks if not c["ok"]]
        log(f"   {len(checks) - len(failed)} of {len(checks)} ok")
    finally:
        stop.set()
        drain.set()
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        if daemon is not None:
            client = stream = None
            daemon.stop()
    out["total_s"] = time.monotonic() - t_begin
    log(f"\nTotal {out['total_s']:.1f} s; load average {out['load_start']} at the start, "
        f"{out.get('load_end')} at the end")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(out, f, indent=1)
        log(f"wrote {opts.json}")
    return 1 if failed or "checks" not in out else 0


if __name__ == "__main__":
    sys.exit(main())
