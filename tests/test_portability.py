"""Runs on every CPU: the same results on emulated older CPUs (qemu-user) as natively.

- ``qemu-x86_64 -cpu Haswell`` (AVX2, no AVX-512): the kernels' core cases on every path it can
  run, and a short greedy SmolLM2 generation, equal the native run on the same path; asking for
  AVX-512 there warns and runs AVX2 (a path the CPU lacks is never executed).
- ``qemu-x86_64 -cpu Nehalem`` (SSE4.2, the portable path) runs a wheel built by ``pip wheel .``:
  the wheel carries no instruction the oldest supported CPU lacks, and gives the same results.
- NEON under ``qemu-aarch64`` (scripts/neon_selftest.sh) matches the portable path.

scripts/setup.sh installs Debian's qemu-user (and the AArch64 cross compiler) as root; where
they are missing each check is skipped with that reason (shown by pytest -ra).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesdk import kernels
from kernel_bounds import within_f32_bound, within_int8_bound
from portable_run import CASES, case_inputs

from conftest import smollm2_path

ROOT = Path(__file__).resolve().parents[1]
RUN = Path(__file__).with_name("portable_run.py")
pytestmark = pytest.mark.slow

# What each emulated CPU must run: its runnable paths, best first, and features it must lack.
CPUS = {"Haswell": (("avx2", "portable"), ("avx512f", "avxvnni", "amx-tile")), "Nehalem": (("portable",), ("avx", "avx2", "fma", "amx-tile"))}


def _qemu() -> str:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(f"x86-64 emulation checks run on x86-64 Linux hosts (this is {sys.platform}/{platform.machine()})")
    q = shutil.which("qemu-x86_64")
    if q is None:
        pytest.skip("qemu-x86_64 not found: apt-get install qemu-user (scripts/setup.sh does as root)")
    if not kernels.available():
        pytest.skip("C kernels not built")
    return q


_model = smollm2_path


def _run(out: Path, *, cpu: str | None = None, env: dict | None = None, every_path: bool = False):
    cmd = [sys.executable, str(RUN), str(out), "--model", _model()] + (["--every-path"] if every_path else [])
    base = dict(os.environ)
    if cpu:
        cmd = [_qemu(), "-cpu", cpu] + cmd
        # numpy's OpenBLAS picks its kernels from the host, not the emulated CPUID: under qemu's Nehalem on a
        # Zen 5 host it ran an instruction Nehalem lacks (SIGILL in numpy's import-time dot). qemu's model
        # names are OpenBLAS core types too.
        base["OPENBLAS_CORETYPE"] = cpu
    r = subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{cpu or 'native'} run failed ({r.returncode}):\n{r.stderr[-4000:]}"
    data = np.load(out)
    return json.loads(str(data["meta"])), {k: data[k] for k in data.files if k != "meta"}, r.stderr


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    _qemu()
    return _run(tmp_path_factory.mktemp("native") / "native.npz", every_path=True)


def _check_same_as_native(meta, arrays, native, cpu):
    nmeta, narr, _ = native
    runnable, lacks = CPUS[cpu]
    info = meta["info"]
    assert tuple(info["simd_runnable"]) == runnable and info["simd"] == runnable[0], info
    assert not set(lacks) & set(info["cpu_features"]), info["cpu_features"]
    for path in runnable:
        for i in range(len(CASES)):
            x, qt = case_inputs(i)
            f32, i8, xq = (arrays[f"{path}/{i}/{a}"] for a in ("f32", "int8", "xq"))
            assert within_f32_bound(f32, x, qt) and within_int8_bound(i8, x, qt), (cpu, path, CASES[i])
            if f"{path}/{i}/f32" in narr:  # the same instructions natively: the same bits
                for a, v in (("f32", f32), ("int8", i8), ("xq", xq)):
                    np.testing.assert_array_equal(v, narr[f"{path}/{i}/{a}"], err_msg=f"{cpu} {path} case {i} {a}")
    best = runnable[0]
    assert meta["fused"] and meta["llm_loop"][best] == ("avx2" if best == "avx2" else "portable")
    # The LLM loop also calls libm (expf, cos, sin), whose glibc variant follows the CPU (FMA or not):
    # on a CPU with FMA like this one's, the same path gives the same bits and the same greedy text;
    # without it the last bits differ, which can flip a near-tie in a long greedy run, so the logits
    # must agree closely (and with the native best path's, whose loop differs the same way).
    a = arrays[f"{best}/logits"]
    if "fma" in meta["info"]["cpu_features"]:
        np.testing.assert_array_equal(a, narr[f"{best}/logits"])
        assert nmeta["text"][best] == meta["text"][best], (cpu, meta["text"], nmeta["text"])
    for ref in {best, nmeta["info"]["simd"]}:
        b = narr[f"{ref}/logits"]
        assert np.abs(a - b).max() < 0.05 * np.abs(b).max() and a.argmax() == b.argmax(), f"{cpu} {best} logits vs native {ref}"


def test_haswell_matches_native_and_never_runs_avx512(native, tmp_path):
    """AVX-512 asked for on an AVX2 CPU: a warning naming the missing features, then AVX2 results."""
    meta, arrays, err = _run(tmp_path / "haswell.npz", cpu="Haswell", env={"EDGESDK_SIMD": "avx512vnni"})
    assert meta["info"]["simd_requested"] == "avx512vnni"
    assert "needs avx512f" in meta["info"]["simd_note"] and "needs avx512f" in err
    _check_same_as_native(meta, arrays, native, "Haswell")


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """edgesdk installed from a freshly built wheel into a directory of its own."""
    _qemu()
    tmp = tmp_path_factory.mktemp("wheel")
    # from a copy of the tracked tree: setuptools' build/ stays out of the checkout
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout: cannot tell the source tree from build outputs")
    for rel in filter(None, files.stdout.split("\0")):
        (tmp / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / rel).is_file():
            shutil.copy2(ROOT / rel, tmp / "src" / rel)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(tmp / "src"), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    (whl,) = (tmp / "dist").glob("edgesdk-*.whl")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"), str(whl)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return tmp / "site"


def test_wheel_runs_on_nehalem(native, wheel_site, tmp_path):
    """The oldest supported CPU (SSE4.2) imports the built wheel and runs a model on the portable path."""
    meta, arrays, err = _run(tmp_path / "nehalem.npz", cpu="Nehalem", env={"PYTHONPATH": str(wheel_site), "EDGESDK_SIMD": "avx2"})
    assert Path(meta["edgesdk_file"]).is_relative_to(wheel_site), meta["edgesdk_file"]
    assert "needs avx2" in meta["info"]["simd_note"] and "needs avx2" in err
    _check_same_as_native(meta, arrays, native, "Nehalem")


def test_neon_under_qemu_aarch64():
    missing = [t for t in ("qemu-aarch64", "aarch64-linux-gnu-gcc") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not found: apt-get install qemu-user gcc-aarch64-linux-gnu (scripts/setup.sh does as root)")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "neon_selftest.sh")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "NEON selftest passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
