"""The Tiny Training Engine: ir, autodiff, passes, memory, executor, codegen."""
