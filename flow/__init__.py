"""TV-L1 optical flow and its quantization: pure functions on numpy arrays."""

from flow.tvl1 import (
    DEFAULT_FLOW_PRESET,
    FLOW_PRESETS,
    TVL1Params,
    compute_flow,
    dequantize_flow,
    flow_params,
    quantize_flow,
    to_gray,
)

__all__ = [
    "DEFAULT_FLOW_PRESET",
    "FLOW_PRESETS",
    "TVL1Params",
    "compute_flow",
    "dequantize_flow",
    "flow_params",
    "quantize_flow",
    "to_gray",
]
