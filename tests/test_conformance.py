"""Conformance: every hub model on every installed backend that reads it, against the model's own runtime.

Stateful models (silero VAD's recurrent state, the wake word's streaming variables) run a whole
sequence on both sides, so a state that does not round-trip shows up as diverging outputs.
"""

import os

import numpy as np
import pytest
from conftest import hub_path
from model_cases import FP16_TOL, SLOW_ON_SIMULATOR, cases, hub_feeds, run_vad

import edgesdk

CASES, AUDIO = cases()


def _params():
    """(case, device) for every device whose backend reads the case's format; unavailable backends skip with the reason."""
    from edgesdk import hub

    reg = edgesdk.get_registry()
    params = []
    for case, (hub_name, *_rest) in sorted(CASES.items()):
        fmt = hub.CATALOG[hub_name].format
        for st in reg.statuses():
            backend = reg.backend(st.name) if st.name in reg.backend_names else None
            if backend is not None and fmt not in backend.formats:
                continue
            if not st.devices:
                params.append(pytest.param(case, None, id=f"{case}-{st.name}", marks=pytest.mark.skip(reason=f"backend {st.name} unavailable: {st.reason}")))
            params += [pytest.param(case, d.id, id=f"{case}-{d.id}", marks=_slow_mark(hub_name, d)) for d in st.devices]
    return params


def _slow_mark(hub_name, device):
    seconds = SLOW_ON_SIMULATOR.get(hub_name) if device.simulated else None
    if seconds is None or os.environ.get("EDGESDK_SLOW_TESTS") == "1":
        return ()
    return pytest.mark.skip(reason=f"{device.id} is simulated here and takes ~{seconds} s for {hub_name}; EDGESDK_SLOW_TESTS=1 runs it")


@pytest.mark.parametrize("case,device_id", _params())
def test_model_matches_reference(case, device_id):
    hub_name, reference, feeds_list, atol = CASES[case]
    path = hub_path(hub_name)
    try:
        s = edgesdk.Session(path, require=device_id)
    except edgesdk.PlacementError as exc:
        # A backend that declines the model up front (check(): e.g. an NPU that compiles static shapes
        # only) is answering a capability question; a failed load or a raising check is a failure.
        why = next((r.reason for r in exc.refusals if r.device == device_id), "")
        if why and not why.startswith(("load failed", "check raised")) and "would fall back" not in why:
            pytest.skip(f"{device_id} declines {case}: {why}")
        raise
    ref = reference(path)
    tol = FP16_TOL if s.placement.device.kind == "npu" else {"atol": atol, "rtol": 0}
    if case == "silero-vad":
        got, want = run_vad(s.run, AUDIO), run_vad(ref, AUDIO)
        np.testing.assert_allclose(got, want, **tol)
        return
    for feeds in feeds_list or [hub_feeds(hub_name, s.inputs)]:
        got, want = s.run(feeds), ref(feeds)
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k].astype(np.float64), want[k].astype(np.float64), **tol, err_msg=f"{case} output {k}")
