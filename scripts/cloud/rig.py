#!/usr/bin/python3
"""Process helpers for scripts/openstack-cloud (run with Debian's /usr/bin/python3).

Sub-commands:
  spawn   start one service detached (new session, package user, clean env,
          stdout+stderr appended to its log, all other fds closed) and record
          "PID STARTTIME" in its pid file.
  alive   exit 0 if the pid file names a live process (PID *and* start time
          match, so a recycled PID is never mistaken for ours).
  stop    SIGTERM the recorded process and the other members of its session
          (the session is the one spawn created for it), wait, then SIGKILL
          what is left; never looks processes up by name.
  port    wait until HOST:PORT accepts TCP connections (or just test once).
  pss     print the PSS (KiB) of the recorded process and its session.
"""
import argparse
import grp
import os
import pwd
import signal
import socket
import sys
import time


def _stat(pid):
    """Return (starttime, session id, pgid) of pid, or None."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces/parentheses: split after the last ')'
    rest = data[data.rindex(')') + 2:].split()
    # rest[0] is field 3 (state); field N is rest[N-3]
    state = rest[0]
    if state == 'Z':
        return None
    return int(rest[19]), int(rest[3]), int(rest[2])


def read_pidfile(path):
    try:
        with open(path) as f:
            parts = f.read().split()
        return int(parts[0]), int(parts[1])
    except (OSError, ValueError, IndexError):
        return None, None


def is_alive(path):
    pid, start = read_pidfile(path)
    if pid is None:
        return None
    st = _stat(pid)
    if st is None or st[0] != start:
        return None
    return pid


def session_members(sid):
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        st = _stat(int(d))
        if st and st[1] == sid:
            out.append(int(d))
    return out


def cmd_spawn(a):
    pw = pwd.getpwnam(a.user)
    env = {
        'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'LANG': 'C.UTF-8',
        'LC_ALL': 'C.UTF-8',
        'HOME': a.home or pw.pw_dir,
        'USER': a.user,
        'LOGNAME': a.user,
        'PYTHONUNBUFFERED': '1',
    }
    for kv in a.env or []:
        k, _, v = kv.partition('=')
        env[k] = v
    argv = a.argv
    if argv and argv[0] == '--':
        argv = argv[1:]
    if not argv:
        sys.exit('spawn: no command given')
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            logfd = os.open(a.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            nullfd = os.open('/dev/null', os.O_RDONLY)
            os.dup2(nullfd, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.set_inheritable(w, False)
            # close everything else (but keep w until exec: it is CLOEXEC)
            for fd in range(3, 4096):
                if fd != w:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            cwd = a.cwd or pw.pw_dir
            os.chdir(cwd if os.path.isdir(cwd) else '/')
            if os.getuid() == 0 and pw.pw_uid != 0:
                groups = [g.gr_gid for g in grp.getgrall() if a.user in g.gr_mem]
                os.setgroups(list({pw.pw_gid, *groups}))
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
            os.umask(0o022)
            os.execvpe(argv[0], argv, env)
        except BaseException as e:  # report exec failure to the parent
            try:
                os.write(w, ('%s: %s' % (type(e).__name__, e)).encode())
            finally:
                os._exit(127)
    os.close(w)
    err = os.read(r, 4096)
    os.close(r)
    if err:
        os.waitpid(pid, 0)
        sys.exit('spawn %s failed: %s' % (a.name, err.decode()))
    st = _stat(pid)
    if st is None:
        sys.exit('spawn %s: process %d died immediately (see %s)' % (a.name, pid, a.log))
    with open(a.pidfile + '.tmp', 'w') as f:
        f.write('%d %d %s\n' % (pid, st[0], a.name))
    os.rename(a.pidfile + '.tmp', a.pidfile)
    print(pid)


def cmd_alive(a):
    pid = is_alive(a.pidfile)
    if pid is None:
        sys.exit(1)
    print(pid)


def cmd_stop(a):
    pid = is_alive(a.pidfile)
    if pid is None:
        try:
            os.unlink(a.pidfile)
        except OSError:
            pass
        print('not running')
        return
    members = set(session_members(pid)) | {pid}
    for p in sorted(members):
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        left = [p for p in members if _stat(p) is not None]
        if not left:
            break
        time.sleep(0.2)
    left = [p for p in members if _stat(p) is not None]
    # members that appeared after the TERM (forked children) are in the session too
    left = set(left) | set(session_members(pid))
    if left:
        print('still running after %ds, SIGKILL %s' % (a.timeout, sorted(left)))
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        t = time.time() + 10
        while time.time() < t and any(_stat(p) for p in left):
            time.sleep(0.1)
    os.unlink(a.pidfile)
    print('stopped (pid %d)' % pid)


def port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def cmd_port(a):
    deadline = time.time() + a.timeout
    while True:
        if port_open(a.host, a.port):
            return
        if time.time() >= deadline:
            sys.exit(1)
        if a.pidfile and is_alive(a.pidfile) is None:
            sys.exit(2)
        time.sleep(0.5)


def pss_of(pid):
    total = 0
    try:
        with open('/proc/%d/smaps_rollup' % pid) as f:
            for line in f:
                if line.startswith('Pss:'):
                    total += int(line.split()[1])
    except OSError:
        pass
    return total


def cmd_pss(a):
    pid = is_alive(a.pidfile)
    if pid is None:
        print(0, 0)
        return
    members = set(session_members(pid)) | {pid}
    print(sum(pss_of(p) for p in members), len(members))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('spawn')
    s.add_argument('--name', required=True)
    s.add_argument('--user', required=True)
    s.add_argument('--log', required=True)
    s.add_argument('--pidfile', required=True)
    s.add_argument('--cwd')
    s.add_argument('--home')
    s.add_argument('--env', action='append')
    s.add_argument('argv', nargs=argparse.REMAINDER)
    s = sub.add_parser('alive')
    s.add_argument('pidfile')
    s = sub.add_parser('stop')
    s.add_argument('pidfile')
    s.add_argument('--timeout', type=int, default=60)
    s = sub.add_parser('port')
    s.add_argument('host')
    s.add_argument('port', type=int)
    s.add_argument('--timeout', type=float, default=0)
    s.add_argument('--pidfile')
    s = sub.add_parser('pss')
    s.add_argument('pidfile')
    a = p.parse_args()
    {'spawn': cmd_spawn, 'alive': cmd_alive, 'stop': cmd_stop,
     'port': cmd_port, 'pss': cmd_pss}[a.cmd](a)


if __name__ == '__main__':
    main()
