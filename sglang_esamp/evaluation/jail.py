"""The inside of the code sandbox: run as PID 1 of fresh user, network, PID and mount
namespaces (``unshare``), it makes every filesystem read-only except the candidate's own
folder, gives it a private ``/dev/shm``, sets the resource limits and execs the candidate.
With ``--no-mounts`` (no namespaces on this machine) it only sets the limits.

Usage (``sandbox.py`` builds this command)::

    unshare -r -n -p -f -m --kill-child --mount-proc python -I jail.py WORK MEM_MB CPU_S NPROC CODE
"""

import os
import resource
import subprocess
import sys

KEEP = ("/proc", "/sys", "/dev")  # kernel views; /dev/shm gets a private tmpfs below


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def read_only_everywhere_but(work: str) -> None:
    mount("--bind", work, work)  # its own mount, so that it stays writable
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point != work and not any(point == k or point.startswith(k + "/") for k in KEEP):
                points.append(point)
    for point in points:
        mount("-o", "remount,bind,ro", point)
    mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", "/dev/shm")


def main() -> None:
    args = sys.argv[1:]
    mounts = args[0] != "--no-mounts"
    work, memory_mb, cpu_s, nproc, code = args[-5], int(args[-4]), int(args[-3]), int(args[-2]), args[-1]
    if mounts:
        read_only_everywhere_but(work)
    mem = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 2**20, 16 * 2**20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if nproc > 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    os.chdir(work)
    os.execv(sys.executable, [sys.executable, "-I", code])


if __name__ == "__main__":
    main()
