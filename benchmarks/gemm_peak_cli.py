"""Run the GEMM-peak measurement in its own process: python -m pairbert.benchmarks.gemm_peak_cli H THREADS SECONDS"""

import json
import sys

from .gemm_peak import gemm_peak_gflops

hidden, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
print(json.dumps(gemm_peak_gflops(hidden=hidden, threads=threads, seconds=seconds)))
