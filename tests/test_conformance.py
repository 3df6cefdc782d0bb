"""Conformance: every real model on every installed backend that reads it, against the model's own runtime.

Stateful models (silero VAD's recurrent state, the wake word's streaming variables) run a whole
sequence on both sides, so a state that does not round-trip shows up as diverging outputs.
"""

from pathlib import Path

import numpy as np
import pytest

import edgesdk

from conftest import hub_path
from model_cases import cases, run_vad

CASES, AUDIO = cases()


def _params():
    """(case, device) for every device whose backend reads the case's format; unavailable backends skip with the reason."""
    from edgesdk import hub
    from edgesdk._model import KNOWN_EXTENSIONS

    reg = edgesdk.get_registry()
    params = []
    for case, (hub_name, *_rest) in sorted(CASES.items()):
        fmt = KNOWN_EXTENSIONS[Path(hub.CATALOG[hub_name].relpath).suffix]
        for st in reg.statuses():
            backend = reg.backend(st.name) if st.name in reg.backend_names else None
            if backend is not None and fmt not in backend.formats:
                continue
            if not st.devices:
                params.append(pytest.param(case, None, id=f"{case}-{st.name}", marks=pytest.mark.skip(reason=f"backend {st.name} unavailable: {st.reason}")))
            params += [pytest.param(case, d.id, id=f"{case}-{d.id}") for d in st.devices]
    return params


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
    if case == "silero-vad":
        got, want = run_vad(s.run, AUDIO), run_vad(ref, AUDIO)
        np.testing.assert_allclose(got, want, atol=atol, rtol=0)
        return
    for feeds in feeds_list:
        got, want = s.run(feeds), ref(feeds)
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
            np.testing.assert_allclose(got[k].astype(np.float64), want[k].astype(np.float64), atol=atol, rtol=0, err_msg=f"{case} output {k}")
