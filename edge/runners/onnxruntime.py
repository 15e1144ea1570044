"""ONNX Runtime runner: CPU everywhere; CUDA and TensorRT execution providers where installed."""

from __future__ import annotations

import numpy as np

from edge.runners.base import Runner, RunnerError

# In order of preference; only those the installed onnxruntime offers are used.
DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# Our Q/DQ models give each consumer its own QuantizeLinear/DequantizeLinear pair
# (calibration.quantize.dedicate_qdq_pairs), because ONNX Runtime fuses DQ -> Conv
# -> Q into QLinearConv (and converts int8 activations to the uint8 its x86
# kernels take) only where a Q feeds a single DQ. Common-subexpression
# elimination would merge those identical pairs again and leave most
# convolutions in float with their weights dequantized on every run; it has
# nothing else to find in an exported, simplified graph.
DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def make_session(path, providers=("CPUExecutionProvider",), intra_op_threads: int = 0):
    """An ``onnxruntime.InferenceSession`` for a bundle model, with the options every caller should use."""
    import onnxruntime as ort  # lazy: the runtime may run TensorRT only

    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(str(path), options, providers=list(providers),
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, bundle, precision: str = "fp32", providers: tuple[str, ...] = DEFAULT_PROVIDERS,
                 intra_op_threads: int = 0) -> None:
        super().__init__(bundle, precision)
        self.requested_providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self._session = None

    def _activate_impl(self) -> None:
        import onnxruntime as ort  # lazy: the runtime may run TensorRT only

        available = ort.get_available_providers()
        providers = [p for p in self.requested_providers if p in available]
        if not providers:
            raise RunnerError(f"none of the providers {list(self.requested_providers)} is available "
                              f"(this onnxruntime offers {available})")
        self._session = make_session(self.model_path, providers, self.intra_op_threads)
        self._output_names = [o.name for o in self.bundle.manifest.outputs]

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers() if self._session is not None else []

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feed)))

    def _deactivate_impl(self) -> None:
        self._session = None
