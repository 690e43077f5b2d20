"""Installs into fresh virtual environments (network or a local index; minutes): `-m install`, run by
.ci/run."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LIST_BUILDS = (
    "import json, importlib.metadata as m\n"
    "names = sorted({(d.metadata['Name'] or '').lower().replace('_', '-') for d in m.distributions()})\n"
    "import onnxruntime\n"
    "from pairbert.runtime.ort import installed_builds\n"
    "print(json.dumps({'onnxruntime_dists': [n for n in names if n.startswith('onnxruntime')],\n"
    "                  'providers': onnxruntime.get_available_providers(), 'builds': installed_builds(),\n"
    "                  'torch': 'torch' in names}))\n"
)


@pytest.mark.install
def test_gpu_extra_installs_exactly_one_onnxruntime_with_cuda(tmp_path):
    env = tmp_path / "gpu"
    venv.create(env, with_pip=True)
    python = env / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"{ROOT}[gpu]"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([str(python), "-c", LIST_BUILDS], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["onnxruntime_dists"] == ["onnxruntime-gpu"], found
    assert found["builds"] == ["onnxruntime-gpu"]
    assert "CUDAExecutionProvider" in found["providers"], found["providers"]
    assert not found["torch"]  # the runtime extras never pull torch
