"""mcutrain: train int8 MobileNet-style networks on microcontrollers (MCUNetV3-style).

Pipeline, in package order: models -> data -> train (float) -> quant (int8, QAS) -> sparse/search
-> engine (ir, autodiff, passes, memory, executor, codegen) -> cli -> reports.
"""

__version__ = "0.1.0"
