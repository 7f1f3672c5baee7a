"""Render the fan-out results (JSON lines from herald-load) as the "Fan-out: herald vs Daphne"
section of docs/benchmarks.md. Only the text between the fanout markers is replaced; the rest
of the file (e.g. the "Channel layer" section) is left as it is.

    report.py RESULTS.jsonl META.json docs/benchmarks.md
    report.py summary '<one herald-load JSON line>'
    report.py merge PROCS part.json...   (idle_50k: one line from one herald-load per server)
    report.py reconnect-record EXCEPTIONS EVENTS LOADAVG SAVED.jsonl [PORT...] < line
    report.py metrics PORT   (herald_history_* of one herald, saved before it is stopped)
    report.py reconnect-summary < line
    report.py deflate-table results/deflate-*.jsonl   (markdown table of the deflate scenario)
"""
import json
import sys
from pathlib import Path

BEGIN = "<!-- fanout:begin (written by benches/fanout/run.sh; edit the script, not this text) -->"
END = "<!-- fanout:end -->"
HEADING = "## Fan-out: herald vs Daphne"

# (scenario key, title, rows); a row is (metric label, function(result) -> number or None,
# format, "higher" or "lower" is better, target text for herald)
def frames_per_s(r):
    return r["frames_per_s"] if r["frames"] > 1 else None


def delivered(r):
    exp = r.get("expected_frames")
    return None if not exp else 100.0 * r["frames"] / exp


def lat(key):
    return lambda r: r["latency"][key] if r["latency"]["samples"] else None


def kib_per_socket(r):
    v = r.get("rss_per_socket_bytes")
    return None if v is None else v / 1024.0


def failures(r):
    return r["connect"]["failed"]


def time_to_all(r):
    c = r["connect"]
    return c["time_to_all_connected_ms"] / 1000.0 if c["connected"] else None


def python_send_ms(r):
    """sent_at -> group_send returned in the Python sender (p50 / p99), as text."""
    out = (r.get("sender") or {}).get("output")
    if not isinstance(out, dict) or out.get("send_p50_ms") is None:
        return None
    return f"{out['send_p50_ms']:,.1f} / {out['send_p99_ms']:,.1f}"


def sender_field(key):
    def get(r):
        out = (r.get("sender") or {}).get("output")
        return out.get(key) if isinstance(out, dict) else None
    return get


def cpu_us_per_frame(key):
    """CPU µs the server process (or redis-server) used per delivered frame, the whole
    scenario included; unlike rates, it holds on a shared machine."""
    def get(r):
        v = r.get(key)
        return None if v is None or r["frames"] < 1 else 1e6 * v / r["frames"]
    return get


THROUGHPUT = [
    ("frames/s", frames_per_s, "{:,.0f}", "higher"),
    ("delivered %", delivered, "{:.1f}", "higher"),
    ("failed group_sends", sender_field("errors"), "{:,}", "lower"),
    ("dropped over capacity (Rust sender only)", sender_field("over_capacity"), "{:,}", "lower"),
    ("of which in the Python sender, p50/p99 ms", python_send_ms, "{}", None),
    ("p50 latency ms", lat("p50_ms"), "{:,.1f}", "lower"),
    ("p99 latency ms", lat("p99_ms"), "{:,.1f}", "lower"),
    ("max latency ms", lat("max_ms"), "{:,.1f}", "lower"),
    ("server CPU µs per frame", cpu_us_per_frame("server_cpu_s"), "{:,.2f}", "lower"),
    ("Redis CPU µs per frame", cpu_us_per_frame("redis_cpu_s"), "{:,.2f}", "lower"),
]
def idle_cpu_us_per_socket_s(r):
    """Server CPU while the sockets were held (handshakes excluded), per socket per second."""
    cpu, held, n = r.get("server_cpu_receive_s"), r.get("receive_phase_s"), r["connect"]["connected"]
    if cpu is None or not held or not n:
        return None
    return cpu * 1e6 / n / held


# Rows of the idle scenarios.
IDLE = [
    ("connected", lambda r: r["connect"]["connected"], "{:,}", "higher"),
    ("RSS KiB per socket", kib_per_socket, "{:,.1f}", "lower"),
    ("RSS MiB total", lambda r: r["rss_end_bytes"] / 2**20 if r.get("rss_end_bytes") else None, "{:,.0f}", "lower"),
    ("held s", lambda r: r.get("receive_phase_s"), "{:,.0f}", "higher"),
    ("server CPU µs per socket per s held", idle_cpu_us_per_socket_s, "{:,.3f}", "lower"),
]
SCENARIOS = [
    ("broadcast_py", "Broadcast: 1 group of 1,000 sockets, 100 Python group_sends", THROUGHPUT,
     {"frames/s": ">= 300k", "p99 latency ms": "<= 50"}),
    ("broadcast_rust", "Broadcast: 1 group of 1,000 sockets, 100 Rust group_sends", THROUGHPUT,
     {"frames/s": ">= 300k", "p99 latency ms": "<= 50"}),
    ("bcast_paced_py", "Broadcast at the target load: 300 Python group_sends/s to 1,000 sockets for 3 s",
     THROUGHPUT, {"frames/s": ">= 300k", "p99 latency ms": "<= 50"}),
    ("bcast_paced_rust", "Broadcast at the target load: 300 Rust group_sends/s to 1,000 sockets for 3 s",
     THROUGHPUT, {"frames/s": ">= 300k", "p99 latency ms": "<= 50"}),
    ("peruser_py", "Per-user: 1,000 users x 10 messages, Python senders", THROUGHPUT, {}),
    ("peruser_rust", "Per-user: 1,000 users x 10 messages, Rust sender", THROUGHPUT,
     {"frames/s": ">= 20k"}),
    ("peruser_batch", "Per-user: 1,000 users x 100 messages, Rust sender pipelined (group_send_many, 200 per pipeline; capacity 1,000)",
     THROUGHPUT, {"delivered %": "100"}),
    ("paced", "Paced: 1,000 msgs/s over 1,000 users for 10 s (Python sender)", THROUGHPUT,
     {"p99 latency ms": "<= 5"}),
    ("paced_rust", "Paced: 1,000 msgs/s over 1,000 users for 10 s (Rust sender)", THROUGHPUT,
     {"p99 latency ms": "<= 5"}),
    ("burst_1m", "Big burst: 100 Rust group_sends within 1 s to 10,000 sockets (1,000,000 deliveries)",
     THROUGHPUT, {"delivered %": "100", "p99 latency ms": "<= 500"}),
    ("burst_1m_py", "Big burst: 100 Python group_sends within 1 s to 10,000 sockets (1,000,000 deliveries)",
     THROUGHPUT, {}),
    ("steady_10k", "Steady: 1 Rust group_send every 500 ms to 10,000 sockets for 60 s", THROUGHPUT,
     {"p99 latency ms": "<= 20"}),
    ("idle_10k", "Idle: 10,000 authenticated sockets held 60 s (default 20 s ping)", IDLE,
     {"server CPU µs per socket per s held": "<= 1", "RSS KiB per socket": "<= 8"}),
    ("idle_max", "Idle: the most authenticated sockets the fd limit allows (issue: 50,000)", IDLE,
     {"RSS KiB per socket": "<= 10 (at 50k)"}),
    ("idle_50k", "Idle: 50,000 authenticated sockets over several server processes (fd limit)",
     [("server processes", lambda r: r.get("server_processes"), "{:,}", None)] + IDLE,
     {"connected": "50,000", "RSS KiB per socket": "<= 10"}),
    ("burst_10k", "Connect burst: 10,000 connects at once", [
        ("connected", lambda r: r["connect"]["connected"], "{:,}", "higher"),
        ("failed", failures, "{:,}", "lower"),
        ("time to all connected s", time_to_all, "{:,.2f}", "lower"),
        ("handshake p99 ms", lambda r: r["connect"]["handshake_p99_ms"] or None, "{:,.0f}", "lower"),
    ], {"failed": "0"}),
]


def fmt(value, pattern):
    return "–" if value is None else pattern.format(value)


def ratio(h, d, better):
    if better is None or h is None or d is None:
        return "–"
    if d == 0 or h == 0:
        return "–"
    return f"{h / d:,.2f}x" if better == "higher" else f"{d / h:,.2f}x better" if h < d else f"{h / d:,.2f}x worse"


def render(results, meta):
    by = {}
    for r in results:
        server, scenario = r["label"].split("/", 1)
        by[(server, scenario)] = r
    lines = [HEADING, "", BEGIN, ""]
    lines.append(
        f"Run {meta['date']} on {meta['machine']}; commit `{meta['commit']}`. "
        f"Versions: {meta['versions']}."
    )
    lines.append("")
    lines.append(
        "Same run, same `redis-server`, same Python senders (`benches/fanout/sender.py`), same "
        "client (`herald-load`, `profiling` build = release + debug info, 2 worker threads). Every server is started fresh "
        "(and Redis flushed) for each scenario. Latency is `sent_at` (set by the sender just "
        "before `group_send`) to frame arrival at the client. “–” = not measured "
        "(see the notes). Ratios are herald relative to Daphne."
    )
    lines.append("")
    lines.append("| Scenario | Metric | Daphne | herald | herald vs Daphne | herald target |")
    lines.append("|---|---|---:|---:|---:|---|")
    for key, title, rows, targets in SCENARIOS:
        d_res, h_res = by.get(("daphne", key)), by.get(("herald", key))
        first = True
        for label, fn, pattern, better in rows:
            d = fn(d_res) if d_res else None
            h = fn(h_res) if h_res else None
            lines.append(
                f"| {title if first else ''} | {label} | {fmt(d, pattern)} | {fmt(h, pattern)} | "
                f"{ratio(h, d, better)} | {targets.get(label, '')} |"
            )
            first = False
    lines.append("")
    notes = meta.get("notes", [])
    if notes:
        lines.append("Notes:")
        lines.append("")
        lines.extend(f"* {n}" for n in notes)
        lines.append("")
    lines.append("Connect failures by reason (scenario: server → reasons):")
    lines.append("")
    for (server, key), r in sorted(by.items()):
        f = r["connect"]["failures"]
        if f:
            lines.append(f"* {key}: {server} → " + ", ".join(f"{k} {v:,}" for k, v in sorted(f.items())))
    lines.append("")
    lines.append(f"Raw results: `{meta['raw']}`.")
    lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def summary(line):
    """One human-readable line for a herald-load result (printed by run.sh as it goes)."""
    r = json.loads(line)
    c, lat_ = r["connect"], r["latency"]
    rss = r.get("rss_per_socket_bytes")
    idle_cpu = idle_cpu_us_per_socket_s(r) if r["expected_frames"] is None else None
    return (
        f"connected {c['connected']}/{c['attempted']} (failed {c['failed']}), "
        f"frames {r['frames']}/{r['expected_frames']}, {r['frames_per_s']:,.0f} frames/s, "
        f"p50 {lat_['p50_ms']:,.1f} ms, p99 {lat_['p99_ms']:,.1f} ms, "
        f"rss/socket {'-' if rss is None else f'{rss / 1024:.1f} KiB'}"
        + ("" if idle_cpu is None else f", server CPU {idle_cpu:.3f} µs/socket/s held")
    )


def merge(procs, parts):
    """One result from several herald-load runs against as many server processes: counts are
    summed, times are the slowest, and RSS per socket is the sum of every server's growth
    over the sum of connected sockets."""
    merged = dict(parts[0])
    c = {key: sum(p["connect"][key] for p in parts) for key in ("attempted", "connected", "failed")}
    failures = {}
    for p in parts:
        for reason, n in p["connect"]["failures"].items():
            failures[reason] = failures.get(reason, 0) + n
    c["failures"] = failures
    for key in ("time_to_all_connected_ms", "handshake_p50_ms", "handshake_p99_ms"):
        c[key] = max(p["connect"][key] for p in parts)
    before = [p["connect"].get("rss_before_bytes") for p in parts]
    end = [p.get("rss_end_bytes") for p in parts]
    known = None not in before and None not in end
    c["rss_before_bytes"] = sum(before) if known else None
    c["rss_connected_bytes"] = None
    merged["connect"] = c
    merged["connections"] = c["attempted"]
    merged["rss_end_bytes"] = sum(end) if known else None
    merged["rss_per_socket_bytes"] = (
        (sum(end) - sum(before)) / c["connected"] if known and c["connected"] else None
    )
    cpu = [p.get("server_cpu_receive_s") for p in parts]
    merged["server_cpu_receive_s"] = None if None in cpu else sum(cpu)
    merged["receive_phase_s"] = max(p.get("receive_phase_s") or 0 for p in parts)
    merged["server_processes"] = procs
    return merged


def history_metrics(ports):
    """herald_history_* counters from each herald's /metrics, summed over the ports."""
    import urllib.request
    out = {}
    for port in ports:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        except OSError as err:
            out[f"error_{port}"] = str(err)
            continue
        for line in text.decode().splitlines():
            if line.startswith("herald_history_"):
                name, value = line.rsplit(" ", 1)
                out[name] = out.get(name, 0) + float(value)
    return out


def reconnect_record(line, exceptions, events, load_avg, saved, ports):
    """A flaky/deploy line from herald-load with what the script knows added: herald's
    history counters are those of the running servers plus those saved from stopped ones."""
    r = json.loads(line)
    r["server_exceptions"] = int(exceptions)
    r["events"] = [e for e in events.split(";") if e]
    r["load_avg_end"] = load_avg
    if ports:
        metrics = history_metrics(ports)
        for l in Path(saved).read_text().splitlines():
            for name, value in json.loads(l).items():
                if name.startswith("herald_history_"):
                    metrics[name] = metrics.get(name, 0) + value
        r["history_metrics"] = metrics
    return r


def reconnect_summary(r):
    t, rp = r["total"], r["replay"]
    return (
        f"{r['label']}: joined {r['connect']['joined']}/{r['connect']['attempted']}, "
        f"delivered {t['delivered']}/{t['expected']} ({t['delivered_pct']:.2f} %), "
        f"duplicates {t['duplicates']}, out of order {t['out_of_order']}, cuts {r['cuts']}, "
        f"server closes {r['server_closes']}, reconnects {r['reconnects']}, "
        f"replay p50/p99/max {rp['p50_ms']:.0f}/{rp['p99_ms']:.0f}/{rp['max_ms']:.0f} ms "
        f"{' '.join(r.get('events', []))}"
    )


def deflate_table(path):
    """Per shape: wire bytes and server/Redis CPU per delivered frame, compression off and on."""
    lines = [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]
    runs = {}
    for r in lines:
        if r.get("meta"):
            continue
        server, name = r["label"].split("/", 1)
        _, shape, mode = name.split("_")
        runs[(server, shape, mode)] = r
    shapes = list(dict.fromkeys(shape for _, shape, _ in runs))

    def per_frame(r, key, scale=1.0):
        return scale * r[key] / r["frames"] if r and r["frames"] else None

    def fmt(v, spec):
        return "–" if v is None else format(v, spec)

    out = [
        "| shape | server, compression | delivered | wire bytes / frame | saved "
        "| server CPU µs / frame | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        base = runs.get(("herald", shape, "off"))
        for server, mode in [("herald", "off"), ("herald", "on"), ("daphne", "off")]:
            r = runs.get((server, shape, mode))
            if r is None:
                continue
            wire = per_frame(r, "wire_bytes")
            plain = per_frame(base, "wire_bytes")
            saved = None if wire is None or not plain else 100.0 * (1 - wire / plain)
            out.append(
                f"| {shape} | {server}, {mode} | {fmt(delivered(r), '.1f')} % "
                f"| {fmt(wire, '.0f')} | {fmt(saved, '.0f')} % "
                f"| {fmt(per_frame(r, 'server_cpu_s', 1e6), '.2f')} "
                f"| {fmt(r['latency']['p99_ms'], '.1f')} |"
            )
    return "\n".join(out)


def scale_merge(sender_path, server_cpu, redis_cpu, load_avg, parts):
    """scale_50k: the herald-load runs of every process, summed, with the sender's report."""
    runs = [json.loads(Path(p).read_text().strip().splitlines()[-1]) for p in parts]
    lines = Path(sender_path).read_text().strip().splitlines()
    sender = json.loads(lines[-1]) if lines else None
    frames = sum(r["frames"] for r in runs)
    expected = sum(r.get("expected_frames") or 0 for r in runs)
    return {
        "label": "herald/scale_50k",
        "server_processes": len(runs),
        "connected": sum(r["connect"]["connected"] for r in runs),
        "failed": sum(r["connect"]["failed"] for r in runs),
        "frames": frames,
        "expected_frames": expected,
        "delivered_pct": 100.0 * frames / expected if expected else None,
        "disconnects": sum(r["disconnects"] for r in runs),
        "p50_ms_worst_process": max(r["latency"]["p50_ms"] for r in runs),
        "p99_ms_worst_process": max(r["latency"]["p99_ms"] for r in runs),
        "max_ms": max(r["latency"]["max_ms"] for r in runs),
        "rss_end_bytes": sum(r.get("rss_end_bytes") or 0 for r in runs),
        "rss_per_socket_bytes_mean": sum(r.get("rss_per_socket_bytes") or 0 for r in runs) / len(runs),
        "server_cpu_s": float(server_cpu),
        "redis_cpu_s": float(redis_cpu),
        "load_avg_end": load_avg,
        "sender": sender,
        "runs": runs,
    }


def main():
    if sys.argv[1] == "scale-merge":
        sender, server_cpu, redis_cpu, load_avg, *parts = sys.argv[2:]
        print(json.dumps(scale_merge(sender, server_cpu, redis_cpu, load_avg, parts)))
        return
    if sys.argv[1] == "deflate-table":
        print(deflate_table(sys.argv[2]))
        return
    if sys.argv[1] == "metrics":
        print(json.dumps(history_metrics(sys.argv[2:])))
        return
    if sys.argv[1] == "reconnect-record":
        exceptions, events, load_avg, saved, *ports = sys.argv[2:]
        record = reconnect_record(sys.stdin.read(), exceptions, events, load_avg, saved, ports)
        print(json.dumps(record))
        return
    if sys.argv[1] == "reconnect-summary":
        print(reconnect_summary(json.loads(sys.stdin.read())))
        return
    if sys.argv[1] == "summary":
        print(summary(sys.argv[2]))
        return
    if sys.argv[1] == "merge":
        parts = [json.loads(Path(p).read_text()) for p in sys.argv[3:]]
        print(json.dumps(merge(int(sys.argv[2]), parts)))
        return
    results_path, meta_path, doc_path = sys.argv[1:4]
    results = [json.loads(l) for l in Path(results_path).read_text().splitlines() if l.strip()]
    meta = json.loads(Path(meta_path).read_text())
    section = render(results, meta)
    doc = Path(doc_path)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        start = text.index(HEADING) if HEADING in text else text.index(BEGIN)
        stop = text.index(END) + len(END) + 1
        text = text[:start] + section + text[stop:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)


if __name__ == "__main__":
    main()
