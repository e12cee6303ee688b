"""Measuring helpers shared by the benchmarks (scripts/bench-import, scripts/bench-ova)."""
import os
import subprocess
import sys
import tempfile
import threading
import time


def allocated(path):
    """Bytes a file occupies on disk (holes excluded)."""
    return os.stat(path).st_blocks * 512


def allocated_tree(path):
    """Bytes the files under path (or path itself) occupy on disk; 0 when it is gone."""
    try:
        if not os.path.isdir(path):
            return allocated(path)
    except FileNotFoundError:
        return 0
    total = 0
    for top, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += allocated(os.path.join(top, f))
            except FileNotFoundError:
                pass
    return total


def run_measured(cmd, cwd):
    """Runs cmd; returns (wall seconds, peak RSS bytes, bytes written to storage, stdout).

    Peak RSS is the process's own high-water mark (VmHWM, sampled every 20 ms until it exits):
    getrusage of a child counts the pages it shared with this Python process before exec.
    """
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
    seen = {'write_bytes': 0, 'hwm': 0}

    def sample():
        while p.poll() is None:
            try:
                with open('/proc/%d/status' % p.pid) as f:
                    for line in f:
                        if line.startswith('VmHWM:'):
                            seen['hwm'] = max(seen['hwm'], int(line.split()[1]) * 1024)
                with open('/proc/%d/io' % p.pid) as f:
                    for line in f:
                        k, v = line.split(':')
                        if k == 'write_bytes':
                            seen['write_bytes'] = max(seen['write_bytes'], int(v))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                pass
            time.sleep(0.02)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    p.wait()
    t.join()
    wall = time.monotonic() - t0
    out.seek(0)
    text = out.read().decode()
    if p.returncode != 0:
        err.seek(0)
        sys.stderr.write(err.read().decode())
        raise SystemExit('[bench] %s failed with %d' % (cmd[0], p.returncode))
    return wall, seen['hwm'], seen['write_bytes'], text
