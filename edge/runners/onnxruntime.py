"""ONNX Runtime runner: CPU everywhere; CUDA and TensorRT execution providers where installed.

On the CPU the session gets provider names only, as it always has. Where the
TensorRT or CUDA provider runs, each gets its options (``provider_options``):
TensorRT caches its engines and timing cache under the bundle's
``engines/ort-trt/`` (the first session builds for minutes, later ones load in
seconds), enables FP16 or INT8 after the precision of the ONNX file it runs,
and uses the selected GPU; CUDA takes what TensorRT cannot, on the same GPU,
then the CPU. The GPU paths are unverified on hardware from the development
machines, which have no GPU.
"""

from __future__ import annotations

import numpy as np

from edge.engine import DEFAULT_WORKSPACE_MIB, ORT_TRT_CACHE_DIR
from edge.int8_numerics import ONNXRUNTIME_CPU
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
# Leaves QuantizeLinear/DequantizeLinear unfused: int8 values are rounded and clipped as the model says,
# and the layers between them run in float. That is the arithmetic TensorRT (and any int32-accumulating
# kernel) computes, on every CPU alike; ONNX Runtime's fused x86 kernels differ where they saturate.
EMULATE_QDQ_CONFIG = ("session.disable_quant_qdq", "1")
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
GPU_PROVIDERS = (TENSORRT_PROVIDER, CUDA_PROVIDER)


def provider_options(bundle, precision: str, device: int = 0) -> list[tuple[str, dict]]:
    """The providers, best first, with their options for running ``bundle``'s ``precision`` ONNX file on GPU
    ``device``: TensorRT, then CUDA, then the CPU.

    ``precision`` is the precision of the ONNX file the session loads (``Runner.precision``), not a wish:
    FP16 for the FP16 model, INT8 for the Q/DQ model (TensorRT must be allowed INT8 to take Q/DQ layers).
    """
    cache = str(bundle.path / ORT_TRT_CACHE_DIR)
    tensorrt = {
        "device_id": device,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        "trt_fp16_enable": precision == "fp16",
        "trt_int8_enable": precision == "int8",
        "trt_max_workspace_size": DEFAULT_WORKSPACE_MIB << 20,  # as voxedge build-engine: the Orin Nano shares memory
    }
    return [(TENSORRT_PROVIDER, tensorrt), (CUDA_PROVIDER, {"device_id": device}), ("CPUExecutionProvider", {})]


def make_session(path, providers=("CPUExecutionProvider",), intra_op_threads: int = 0, emulate_qdq: bool = False):
    """An ``onnxruntime.InferenceSession`` for a bundle model, with the options every caller should use.

    ``emulate_qdq`` runs a Q/DQ model's quantization in float instead of ONNX Runtime's int8 kernels
    (``edge.int8_numerics``): slower, the same on every CPU, and what TensorRT computes.
    """
    import onnxruntime as ort  # lazy: the runtime may run TensorRT only

    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    if emulate_qdq:
        options.add_session_config_entry(*EMULATE_QDQ_CONFIG)
    return ort.InferenceSession(str(path), options, providers=list(providers),
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, bundle, precision: str = "fp32", providers: tuple[str, ...] = DEFAULT_PROVIDERS,
                 intra_op_threads: int = 0, device: int = 0) -> None:
        self.requested_providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self.device = device
        self._session = None
        super().__init__(bundle, precision)

    def _usable_providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = [p for p in self.requested_providers if p in available]
        if not providers:
            raise RunnerError(f"none of the providers {list(self.requested_providers)} is available "
                              f"(this onnxruntime offers {available})")
        return providers

    def target_runtime(self) -> str | None:
        """ONNX Runtime's CPU int8 kernels when the CPU is the first provider that runs; GPU providers
        accumulate int8 in int32 like TensorRT and take the full-range model."""
        try:
            first = self._usable_providers()[0]
        except (ImportError, RunnerError):
            return ONNXRUNTIME_CPU  # activate() will say what is missing
        return ONNXRUNTIME_CPU if first == "CPUExecutionProvider" else None

    def _with_options(self, names: list[str]) -> list:
        """``names`` as the session takes them: plain names without a GPU provider (the CPU path as it always
        was), else each GPU provider with its options (``provider_options``)."""
        if not any(n in GPU_PROVIDERS for n in names):
            return names
        options = dict(provider_options(self.bundle, self.precision, self.device))
        if TENSORRT_PROVIDER in names:
            cache = self.bundle.path / ORT_TRT_CACHE_DIR
            try:
                cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunnerError(f"cannot create the TensorRT provider's cache folder {cache} ({exc}); make the "
                                  "bundle writable, or run with the CUDA or CPU provider") from exc
        return [(n, options[n]) if n in GPU_PROVIDERS else n for n in names]

    def _activate_impl(self) -> None:
        providers = self._with_options(self._usable_providers())
        self._session = make_session(self.model_path, providers, self.intra_op_threads)
        self._output_names = [o.name for o in self.bundle.manifest.outputs]

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers() if self._session is not None else []

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._output_names, self._session.run(self._output_names, feed)))

    def _deactivate_impl(self) -> None:
        self._session = None
