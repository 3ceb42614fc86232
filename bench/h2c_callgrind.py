"""Callgrind instructions of the Portway worker for N cleartext HTTP/2 requests.

``portway run --workers 1`` (the nghttp2 engine when libnghttp2 loads) under
``valgrind --tool=callgrind``, prior-knowledge h2c from ``h2load -n N -c 16 -m 8``, one
route to an nginx upstream answering 200 with a 1 KiB body. Prints ``N total_Ir`` (the
largest per-process total). Per request: (Ir at N=3000 - Ir at N=1000) / 2000.

    PYTHONPATH=<compiled build> python bench/h2c_callgrind.py 3000 /tmp/cg3000
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile

from variants import free_port, nginx, wait_port


def main() -> int:
    n, outdir = int(sys.argv[1]), sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    for f in glob.glob(f"{outdir}/cg.*"):
        os.unlink(f)
    d = tempfile.mkdtemp(prefix="h2c-cg-")
    up, pw = free_port(), free_port()
    ng = nginx(d, "upstream", up, 'location / { return 200 "%s"; }' % ("x" * 1024))
    cfg = f"{d}/portway.yaml"
    with open(cfg, "w") as fh:
        fh.write(
            f"listeners: [{{name: public, address: '127.0.0.1:{pw}'}}]\n"
            "admin: {enabled: false}\n"
            f"upstreams: {{u: {{targets: [{{url: 'http://127.0.0.1:{up}'}}]}}}}\n"
            "routes: [{name: r, match: {paths: ['/']}, upstream: u}]\n"
        )
    env = dict(os.environ, PYTHONHASHSEED="0")
    p = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",
            f"--callgrind-out-file={outdir}/cg.%p",
            sys.executable,
            "-m",
            "portway",
            "run",
            "-c",
            cfg,
            "--workers",
            "1",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_port(pw, 300)
        r = subprocess.run(
            ["h2load", "-n", str(n), "-c", "16", "-m", "8", f"http://127.0.0.1:{pw}/"],
            capture_output=True,
            text=True,
        )
        m = re.search(r"requests: .*", r.stdout)
        print(m.group(0) if m else r.stdout[-500:], file=sys.stderr)
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(120)
        ng.terminate()
    best = 0
    for f in glob.glob(f"{outdir}/cg.*"):
        with open(f, errors="replace") as fh:
            for line in fh:
                if line.startswith("totals:"):
                    best = max(best, int(line.split()[1]))
    print(n, best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
