"""Conformance: every real model on every installed backend that reads it, against the model's own runtime.

Stateful models (silero VAD's recurrent state, the wake word's streaming variables) run a whole
sequence on both sides, so a state that does not round-trip shows up as diverging outputs.
"""

import numpy as np
import pytest

import edgesdk

from conftest import hub_path
from model_cases import cases, run_vad

CASES, AUDIO = cases()


def _device_params():
    reg = edgesdk.get_registry()
    params = []
    for st in reg.statuses():
        if not st.devices:
            params.append(pytest.param(None, id=st.name, marks=pytest.mark.skip(reason=f"backend {st.name} unavailable: {st.reason}")))
        for d in st.devices:
            params.append(pytest.param(d.id, id=d.id))
    return params


@pytest.mark.parametrize("device_id", _device_params())
@pytest.mark.parametrize("case", sorted(CASES))
def test_model_matches_reference(case, device_id):
    hub_name, reference, feeds_list, atol = CASES[case]
    path = hub_path(hub_name)
    reg = edgesdk.get_registry()
    dev = next(d for d in reg.devices() if d.id == device_id)
    backend = reg.backend(dev.backend)
    fmt = edgesdk._model.open_model(path).format
    if fmt not in backend.formats:
        pytest.skip(f"{device_id} does not read {fmt}")
    s = edgesdk.Session(path, require=device_id)
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
