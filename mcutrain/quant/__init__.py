"""int8 quantization: the arithmetic every executor shares, and loading the paper's int8 models.

- ``fixedpoint``: fixed-point multipliers, requantization (TFLite / CMSIS-NN convention), residual add,
  global average pool; NumPy reference functions with bit-equal ``*_torch`` twins.
- ``rng``: counter-based hash RNG (lowbias32) and float32 stochastic rounding, reproducible in C.
- ``mct_int8.h``: the same primitives in C99, for generated code (checked bit-equal by the tests).
- ``safe_pickle``: restricted loader for ``mcu_models/*.pkl`` (numpy arrays only, no code runs).

Import the submodules directly (``from mcutrain.quant import fixedpoint``); nothing is re-exported.
"""
