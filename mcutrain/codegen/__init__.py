"""C code generation: a compiled training program -> dependency-free C99, and its host target.

    program = compile_for_codegen(qmodel, plan, lr=0.1, seed=0)   # the program `mcutrain compile` reports
    generate(program, "out/")  # model.h, model.c, mct_kernels.{h,c}, mct_fused.{h,c}, mct_int8.h, manifest.json
    generate(program, "out/", accumulate="float64")  # audit mode: backward bit-equal to the NumPy reference
                                                     # (default "float32": the FPU's accumulators)
    engine = HostEngine(build_host("out/"))                         # cc -> libmodel.so, via ctypes
    engine.train_step(image, label); engine.predict(image); engine.parameters()

``generate`` (module ``generate``): templates + one emitter per op kind (``emitters.EMITTERS``) over the
schedule and memory plan; ``host``: the host build (optionally with ASan + UBSan) and its runner;
``firmware``: the firmware build for a Cortex-M core (``cores``; ``board/``: start-up, semihosting harness,
linker script), the
memory check before linking and the runner under QEMU; ``targets``: a folder for either target plus
``target.json`` (``mcutrain compile --target``, ``mcutrain run``); ``samples``: dataset -> int8 inputs;
``runner``: run a built folder on samples (host or QEMU).
The kernels (``c/mct_kernels.c``: the forward, its 1x1 convs in ``c/mct_pointwise.c`` (the DSP
build's widened ones in ``c/mct_dsp_pointwise.h``), its DSP depthwise in
``c/mct_depthwise.c``, ``c/mct_backward.c``: loss, backward and updates, ``c/mct_graph_ops.c``: the TFLite graph
ops; the fused row pipelines and channel-by-channel block backwards in ``c/mct_fused.c`` / ``c/mct_fused_grad.c``,
code for them from ``emitters_fused``) mirror the NumPy reference executor: forward bit-exact, backward and updates
to its float rounding (see ``c/mct_kernels.h``, ``c/mct_fused.h``).
The C program's arena is the planned arena of the compiled program (the image streamed row by row
from the caller's buffer).
"""

from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.generate import (ACCUMULATE, CODEGEN_PASSES, DEFAULT_ACCUMULATE, compile_for_codegen, generate,
                                      render, unsupported_kinds)
from mcutrain.codegen.host import HostEngine, build_host, run_sanitized

__all__ = ["ACCUMULATE", "CODEGEN_PASSES", "DEFAULT_ACCUMULATE", "CodegenError", "HostEngine", "build_host",
           "compile_for_codegen", "generate", "render", "run_sanitized", "unsupported_kinds"]
