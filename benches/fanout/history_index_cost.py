"""Redis CPU per recorded message of the history index script, before and after it was made
cheaper: a deliberate measurement, not a test.

Run with the compat venv (it has redis-py), from the repository root:

    tests/compat/.venv/bin/python benches/fanout/history_index_cost.py

It starts its own redis-server on a free port, logs 20,000 members to a log stream, records
them into 1,000 group streams with each script in batches of 256 (as a log reader does), and
prints Redis's own CPU time (INFO cpu) per entry. "before" is the script as it was (it fetched
each member back from the log with XRANGE, and applied the age fence and the expiry on every
entry); "now" is `INDEX` as crates/herald-redis/src/history.rs has it (the member passed in,
the expiry once per group and call, the age limit applied apart by `TRIM`).
"""

import os
import re
import socket
import subprocess
import tempfile
import time

import redis

BEFORE = r"""
local added, missing = 0, 0
for i = 2, #KEYS do
  local b = (i - 2) * 4
  local entry = redis.call('XRANGE', KEYS[1], ARGV[b + 1], ARGV[b + 1])
  if #entry == 0 then
    missing = missing + 1
  else
    local fields = entry[1][2]
    local ok = redis.pcall('XADD', KEYS[i], 'MAXLEN', ARGV[b + 2], ARGV[b + 1], 'm', fields[2])
    if type(ok) ~= 'table' or not ok.err then
      added = added + 1
      local fence = redis.call('XREVRANGE', KEYS[i], '(' .. ARGV[b + 3], '-', 'COUNT', 1)
      if #fence > 0 then
        redis.call('XTRIM', KEYS[i], 'MINID', fence[1][1])
      end
      redis.call('EXPIRE', KEYS[i], ARGV[b + 4])
    end
  end
end
return {added, missing}
"""

SOURCE = os.path.join(os.path.dirname(__file__), "../../crates/herald-redis/src/history.rs")
NOW = re.search(r'pub\(crate\) const INDEX: &str = r"(.*?)";', open(SOURCE).read(), re.S).group(1)

ENTRIES, BATCH, GROUPS = 20_000, 256, 1_000
MEMBER = os.urandom(12) + b"\x83\xa4type\xacuser.message\xa4text" + b"x" * 150


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(r):
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def run(r, name, script, args_of):
    r.flushall()
    ids = [r.xadd("log", {"m": MEMBER}, maxlen=30_000, approximate=True) for _ in range(ENTRIES)]
    script = r.register_script(script)
    start = cpu(r)
    for s in range(0, ENTRIES, BATCH):
        keys, args = [], []
        chunk = range(s, min(ENTRIES, s + BATCH))
        last = {f"{name}:{j % GROUPS}": j for j in chunk}
        for j in chunk:
            group = f"{name}:{j % GROUPS}"
            keys.append(group)
            args += args_of(ids[j], last[group] == j)
        if name == "before":
            keys.insert(0, "log")
        script(keys=keys, args=args)
    return (cpu(r) - start) / ENTRIES * 1e6


def main():
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            r = redis.Redis(port=port)
            for _ in range(100):
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            before = run(r, "before", BEFORE, lambda id_, last: [id_, 101, "1-0", 301])
            now = run(r, "now", NOW, lambda id_, last: [id_, 101, 301 if last else 0, MEMBER])
            print(f"Redis CPU per recorded entry: before {before:.2f} µs, now {now:.2f} µs "
                  f"(load {os.getloadavg()[0]:.1f})")
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
