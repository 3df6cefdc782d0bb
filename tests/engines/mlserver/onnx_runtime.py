"""An MLServer custom runtime that serves an ONNX model with onnxruntime over the V2 protocol.

MLServer imports it by the ``implementation`` path in model-settings.json; the test writes that
file next to a copy of this module and starts ``mlserver start`` on the folder.
"""

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        self._sess = ort.InferenceSession(self.settings.parameters.uri, providers=["CPUExecutionProvider"])
        self._names = [o.name for o in self._sess.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        outs = self._sess.run(self._names, feeds)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output(n, o) for n, o in zip(self._names, outs)])
