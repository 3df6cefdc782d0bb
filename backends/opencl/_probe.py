"""OpenCL device discovery in a child process, remembered per driver configuration.

Enumerating OpenCL platforms loads every installed driver into the process: PoCL alone brings LLVM,
~85 MB of resident memory that stays for the life of the process, even when the model then runs on
the native CPU backend (as a GGUF model placed by preference does). So the enumeration runs in a
child (``python -m edgesdk_backends.opencl._probe`` prints JSON) and its answer is kept in the
``opencl`` cache folder, keyed by everything that decides what the ICD loader finds: the ICD files of
every vendor directory and the size and mtime of the driver library each names, the OpenCL/PoCL/GPU
environment variables, the pyopencl and PoCL package versions, the GPU device nodes and the NVIDIA
driver version. A driver installed, updated or removed, a GPU added or hidden is a new key. The
driver is loaded into this process only when a model is loaded on an OpenCL device.

If the child cannot run (no ``sys.executable``, a sandbox forbidding fork), discovery runs here, as
before; the result is the same, only the memory is not saved.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from edgesdk._cache import EntryStore, discard, touch, writing
from edgesdk._io import cache_dir

__all__ = ["enumerate_devices", "discover"]

log = logging.getLogger("edgesdk.backends.opencl")

SCHEMA = 1
CHILD_TIMEOUT_S = 120.0
_ENV_PREFIXES = (
    "OCL_",
    "OPENCL_",
    "POCL_",
    "CUDA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "ZE_AFFINITY_MASK",
    "RUSTICL_",
)
_LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")


def enumerate_devices() -> dict:
    """What pyopencl finds here: ``{"version", "devices": [...], "notes": [...]}`` or ``{"unavailable": reason}``.
    Each device is a dict of plain values (platform and device index, type, name, memory, details)."""
    try:
        import pyopencl as cl
    except ImportError as exc:
        return {"unavailable": f"pyopencl is not installed ({exc}): pip install edgesdk[opencl]"}
    try:
        platforms = cl.get_platforms()
    except Exception as exc:  # the ICD loader raises PLATFORM_NOT_FOUND_KHR when no driver is registered
        return {"unavailable": f"no OpenCL platform: {exc} (install a GPU driver's OpenCL ICD, or PoCL: pip install edgesdk[opencl])"}
    if not platforms:
        return {"unavailable": "no OpenCL platform is registered with the ICD loader"}
    out, notes = [], []
    for pi, plat in enumerate(platforms):
        try:
            devices = plat.get_devices()
        except Exception as exc:
            notes.append(f"platform {pi} ({plat.name}) lists no devices: {exc}")
            continue
        for di, dev in enumerate(devices):
            ctype = next((n for n in ("GPU", "CPU", "ACCELERATOR", "CUSTOM") if dev.type & getattr(cl.device_type, n)), cl.device_type.to_string(dev.type))
            out.append(
                {
                    "platform_index": pi,
                    "device_index": di,
                    "opencl_type": ctype,
                    "device_name": dev.name.strip(),
                    "platform": plat.name,
                    "platform_version": plat.version,
                    "vendor": dev.vendor,
                    "driver": dev.driver_version,
                    "opencl": dev.version,
                    "compute_units": dev.max_compute_units,
                    "max_work_group": dev.max_work_group_size,
                    "local_mem": dev.local_mem_size,
                    "global_mem": int(dev.global_mem_size),
                }
            )
    if not out:
        return {"unavailable": f"{len(platforms)} OpenCL platform(s) but no device", "notes": notes}
    return {"version": cl.VERSION_TEXT, "devices": out, "notes": notes}


def _icd_dirs() -> list[str]:
    dirs = ["/etc/OpenCL/vendors", os.environ.get("OCL_ICD_VENDORS", ""), os.environ.get("OPENCL_VENDOR_PATH", "")]
    spec = importlib.util.find_spec("pyopencl")
    if spec and spec.submodule_search_locations:  # pyopencl's bundled loader looks beside itself (pocl-binary-distribution)
        dirs += [os.path.join(p, ".libs") for p in spec.submodule_search_locations]
    return [d for d in dirs if d]


def _stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _library(icd_dir: str, name: str):
    """The size and mtime of the driver an ICD file names (absolute, beside it, or in a system library dir)."""
    candidates = [name] if os.path.isabs(name) else [os.path.join(icd_dir, name)] + [os.path.join(d, name) for d in _LIB_DIRS]
    return next(((c, s) for c in candidates if (s := _stat(c))), (name, None))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def configuration() -> dict:
    """Everything the ICD loader's answer depends on (the cache key's material)."""
    icds = []
    for d in _icd_dirs():
        target = d if os.path.isdir(d) else None
        for f in sorted(glob.glob(os.path.join(target, "*.icd")) if target else ([d] if d.endswith(".icd") else [])):
            try:
                text = Path(f).read_text(errors="replace").strip()
            except OSError:
                continue
            icds.append([f, text, *_library(os.path.dirname(f), text)])
    nvidia = None
    try:
        nvidia = Path("/proc/driver/nvidia/version").read_text(errors="replace").strip()
    except OSError:
        pass
    return {
        "schema": SCHEMA,
        "python": sys.executable,
        "icds": icds,
        "env": sorted([k, v] for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)),
        "versions": [_version(d) for d in ("pyopencl", "pocl-binary-distribution")],
        "gpu_nodes": sorted(glob.glob("/dev/dri/*") + glob.glob("/dev/nvidia*") + glob.glob("/dev/kfd")),
        "nvidia": nvidia,
    }


def _cache_path(material: dict) -> Path:
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir("opencl") / f"devices-{key}.json"


def _in_child() -> dict | None:
    try:
        p = subprocess.run([sys.executable, "-m", __name__], capture_output=True, timeout=CHILD_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("opencl: device discovery in a child process failed (%s); discovering here", exc)
        return None
    try:
        answer = json.loads(p.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        log.info("opencl: the discovery child exited %s without an answer (%s); discovering here", p.returncode, p.stderr.decode(errors="replace")[-500:])
        return None
    return answer if isinstance(answer, dict) else None


def discover(artifact_cache: bool = True) -> dict:
    """:func:`enumerate_devices`' answer: from the cache when the configuration is unchanged, else from
    a child process (then cached), else from this process."""
    material = configuration()
    path = _cache_path(material)
    if artifact_cache:
        try:
            entry = json.loads(path.read_text())
            if entry.get("key") == material and isinstance(entry.get("answer"), dict):
                touch(path)
                return entry["answer"]
            raise ValueError("written for another configuration")
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.info("opencl: device cache %s unusable (%s); discovering again", path, exc)
            discard(path)
    answer = _in_child()
    if answer is None:
        return enumerate_devices()
    if artifact_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with writing(path) as f:
                f.write(json.dumps({"key": material, "answer": answer}).encode())
            EntryStore(path.parent).committed(path)
        except OSError as exc:
            log.info("opencl: cannot store the device list in %s: %s", path, exc)
    return answer


if __name__ == "__main__":
    # One JSON line on stdout: the parent reads the last line, so a driver's own chatter cannot break it.
    sys.stdout.write("\n" + json.dumps(enumerate_devices()) + "\n")
