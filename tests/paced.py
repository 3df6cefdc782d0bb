"""An in-test backend whose speed (and energy) per run is known: it runs the model on ONNX Runtime's
CPU EP and then sleeps, so measured placement and ``edgesdk bench`` have an expected winner without
trusting this machine's timing beyond a wide margin."""

import time

import attrs

import edgesdk
from edgesdk.backend import Backend, Device

__all__ = ["Paced"]


class Paced(Backend):
    """An 'npu' that runs the model on ORT's CPU EP, then sleeps ``delay_s`` per run; it counts its
    loads and runs, can fail every run, and can add ``uj_per_run`` to a fake RAPL counter."""

    formats = ("onnx",)

    def __init__(self, name, delay_s, kind="npu", fail=None, uj_per_run=0, counter=None, version="1.0", simulated=False):
        self.name, self.delay_s, self.kind, self.fail, self.version = name, delay_s, kind, fail, version
        self.uj_per_run, self.counter, self.simulated = uj_per_run, counter, simulated
        self.loads = self.runs = 0

    def probe(self):
        return [Device(self.name, f"{self.name}:0", self.kind, f"{self.name} device", None, 100, simulated=self.simulated)]

    def load(self, model, device, options):
        self.loads += 1
        reg = edgesdk.get_registry()
        cpu = next(d for d in reg.devices() if d.id == "onnxruntime:cpu")
        runner = reg.backend("onnxruntime").load(model, cpu, options)
        inner, backend = runner.run, self

        def run(feeds, output_names=None):
            backend.runs += 1
            if backend.fail:
                raise RuntimeError(backend.fail)
            time.sleep(backend.delay_s)
            if backend.counter is not None:
                backend.counter.write_text(str(int(backend.counter.read_text()) + backend.uj_per_run))
            return inner(feeds, output_names)

        runner.run = run
        runner.nodes = tuple(attrs.evolve(n, device_id=device.id) for n in runner.nodes)
        return runner
