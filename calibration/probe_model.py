"""Build the runtime's int8 saturation probe, ``edge/int8_probe.onnx`` (``edge.int8_numerics``).

The runtime has no onnx package, so the probe ships as a file; this writes it
(``python -m calibration.probe_model``) and ``tests/test_int8_numerics.py``
checks that the committed file is what this builds. It is the Q/DQ pattern our
quantizer writes, which ONNX Runtime fuses into one QLinearConv: input ->
QuantizeLinear/DequantizeLinear (int8, scale 1/127) -> 1x1 Conv with int8
weights of 127 (scale 1/127 per output channel) -> QuantizeLinear/
DequantizeLinear (scale 1). Fed ones, every output is exactly the channel count.
"""

from __future__ import annotations

import argparse

import numpy as np

from edge.int8_numerics import PROBE_CHANNELS, PROBE_INPUT, PROBE_MODEL, PROBE_SHAPE

OUTPUT_CHANNELS = 8
PROBE_OPSET = 17
PROBE_IR_VERSION = 8  # readable by every onnxruntime the runtime supports (>= 1.17)


def build_probe() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def init(name, value, dtype):
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    inits = [
        init("x_scale", 1 / 127, np.float32), init("x_zero", 0, np.int8),
        init("w", np.full((OUTPUT_CHANNELS, PROBE_CHANNELS, 1, 1), 127), np.int8),
        init("w_scale", np.full(OUTPUT_CHANNELS, 1 / 127), np.float32), init("w_zero", np.zeros(OUTPUT_CHANNELS), np.int8),
        init("y_scale", 1.0, np.float32), init("y_zero", 0, np.int8),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", [PROBE_INPUT, "x_scale", "x_zero"], ["x_q"], name="x_q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["w_dq"], name="w_dq", axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["conv"], name="conv"),
        helper.make_node("QuantizeLinear", ["conv", "y_scale", "y_zero"], ["y_q"], name="y_q"),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "y_zero"], ["y"], name="y_dq"),
    ]
    out_shape = [PROBE_SHAPE[0], OUTPUT_CHANNELS, *PROBE_SHAPE[2:]]
    graph = helper.make_graph(nodes, "voxedge_int8_probe",
                              [helper.make_tensor_value_info(PROBE_INPUT, TensorProto.FLOAT, list(PROBE_SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", PROBE_OPSET)],
                              producer_name="voxedge calibration.probe_model")
    model.ir_version = PROBE_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(PROBE_MODEL), help="where to write it (default: %(default)s)")
    args = p.parse_args(argv)
    data = build_probe()
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
