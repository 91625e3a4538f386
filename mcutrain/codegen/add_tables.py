"""A residual add's C operands: its constants (``mct_add_params``) and the tables of its rescaled operands
(``mct_add_table``), which depend on the add's constants only and so are made here once, into Flash, rather than by
every call (and every row of a row pipeline) on the device (512 MBQM, ~13 k instructions on the M7 each time)."""

from __future__ import annotations

import numpy as np

from mcutrain.codegen.errors import CodegenError
from mcutrain.codegen.literals import array_body, comment, declare, identifier, int_literal
from mcutrain.engine.ir import Op
from mcutrain.quant.int8_ops import AddParams, add_operand_tables


def add_table_definition(name: str, p: AddParams, note: str) -> str:
    """``static const mct_add_table name``: each operand's rescaled value for the 256 int8
    (``add_operand_tables``, what the NumPy add reads too), constants of the add made here once into Flash rather
    than by every call (and every row of a row pipeline) on the device; ``dsp``: add_dsp's conditions
    (mct_kernels.c: the DSP requantization's ranges), tested here once."""
    tables = add_operand_tables(p)
    dsp = (np.abs(tables).max() < 2**28 and -22 <= p.out_shift <= -1 and p.out_multiplier != -2**31
           and -128 <= p.out_zero <= 127)
    rows = ",\n".join(f"    .{k} = {{\n{array_body(t, 'int32', '        ')}\n    }}" for k, t in zip("ab", tables))
    return f"{comment(note)}\nstatic const mct_add_table {name} = {{\n{rows},\n    .dsp = {int(dsp)}\n}};"


def add_structs(symbols, name: str, op: Op) -> tuple[str, str]:
    """(a residual add's ``mct_add_params`` as ``name``; the symbol of its ``mct_add_table``, registered with
    ``symbols``: one for the add however many stages run it)."""
    params = dict(op.attr("params"))
    fields = list(AddParams.__dataclass_fields__)
    if set(params) != set(fields):
        raise CodegenError(f"op {op.name}: add parameters {sorted(params)} differ from {fields}")
    p = AddParams(**params)
    table = symbols.table(identifier(op.name, "add_table_"),
                          lambda t: add_table_definition(t, p, f"{op.name}: rescaled operands"))
    return declare("mct_add_params", name, op, [(f, int_literal(params[f])) for f in fields]), table
