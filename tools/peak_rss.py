#!/usr/bin/env python3
"""Run a command, then print its wall time and peak resident memory (ru_maxrss of the child, file pages
included) as `peak_rss_bytes=N seconds=S exit=E` on stderr. Exits with the command's exit code."""
import resource
import subprocess
import sys
import time

start = time.time()
code = subprocess.call(sys.argv[1:])
seconds = time.time() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(f"peak_rss_bytes={peak} seconds={seconds:.3f} exit={code}", file=sys.stderr)
sys.exit(code)
