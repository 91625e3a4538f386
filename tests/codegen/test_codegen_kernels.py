"""Kernel building blocks of the generated C checked against their definitions, in C, over millions of
values: the fast requantization of the conv kernels (``mct_requantize_fast``, ``mct_srdhm_fast``,
``mct_add_sat`` in ``c/mct_kernels.h``) gives exactly what the fixed-point reference of ``mct_int8.h`` gives (the one the
NumPy executor is bit-exact with) for every shift, multiplier, zero point and int8 range, edge values
included."""

from __future__ import annotations

import subprocess

import numpy as np

from mcutrain.codegen.add_tables import add_table_definition
from mcutrain.codegen.generate import HERE, KERNEL_FILES, KERNEL_SOURCES
from mcutrain.codegen.host import CFLAGS, compiler
from mcutrain.quant.int8_ops import AddParams

PROGRAM = r"""
#include <stdio.h>
#include "mct_kernels.h"

static uint32_t state = 2463534242u;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 17; state ^= state << 5; return state; }

static const int32_t EDGES[] = {INT32_MIN, INT32_MIN + 1, -1073741824, -65536, -129, -128, -1, 0, 1, 127, 128, 65535,
                                1073741823, 1073741824, INT32_MAX - 1, INT32_MAX};
#define N_EDGES ((int)(sizeof EDGES / sizeof EDGES[0]))

static int32_t value(void) { /* an edge value, or a random one of random magnitude */
    const uint32_t r = next();
    if (r % 4 == 0) return EDGES[next() % N_EDGES];
    return (int32_t)next() >> (next() % 32);
}

int main(void) {
    long cases = 0, bad = 0;
    for (long n = 0; n < 3000000; ++n) {
        const int32_t a = value(), b = value();
        const int32_t multiplier = (next() % 8 == 0) ? value() : (int32_t)(0x40000000u + next() % 0x40000000u);
        const int32_t shift = (int32_t)(next() % 36) - 31; /* -31 .. 4 */
        const int32_t zero = (int32_t)(next() % 256) - 128;
        int32_t qmin = (int32_t)(next() % 256) - 128, qmax = (int32_t)(next() % 256) - 128;
        if (qmin > qmax) { const int32_t t = qmin; qmin = qmax; qmax = t; }
        if (next() % 2) { qmin = -128; qmax = 127; }
        uint8_t in_ref, in_fast;
        const int32_t acc_ref = mct_sat_i32((int64_t)a + b), acc_fast = mct_add_sat(a, b);
        const int8_t ref = mct_requantize(acc_ref, multiplier, shift, zero, qmin, qmax, &in_ref);
        const int8_t fast = mct_requantize_fast(acc_fast, multiplier, shift, zero, qmin, qmax, &in_fast);
        cases += 1;
        if (mct_srdhm(a, b) != mct_srdhm_fast(a, b) || mct_srdhm(a, multiplier) != mct_srdhm_fast(a, multiplier))
            bad += 1;
        if (acc_ref != acc_fast || ref != fast || in_ref != in_fast) {
            if (bad < 5) printf("a=%ld b=%ld m=%ld s=%ld z=%ld [%ld,%ld]: %d/%d %d/%d\n", (long)a, (long)b,
                                (long)multiplier, (long)shift, (long)zero, (long)qmin, (long)qmax, ref, fast, in_ref,
                                in_fast);
            bad += 1;
        }
    }
    printf("cases %ld mismatches %ld\n", cases, bad);
    return bad != 0;
}
"""


def _run_against_kernels(tmp_path, program: str) -> subprocess.CompletedProcess:
    """``program`` built with the kernels' sources (host compiler, the reference flags) and run."""
    source = tmp_path / "check.c"
    source.write_text(program)
    binary = tmp_path / "check"
    headers = {path.parent for path in KERNEL_FILES.values()} | {HERE / "c"}
    cmd = [compiler(), *CFLAGS, *(f"-I{h}" for h in sorted(headers)), str(source),
           *(str(HERE / "c" / name) for name in KERNEL_SOURCES), "-o", str(binary), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return subprocess.run([str(binary)], capture_output=True, text=True)


def test_the_fast_requantization_equals_the_reference(tmp_path):
    result = _run_against_kernels(tmp_path, PROGRAM)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("cases 3000000 mismatches 0"), result.stdout


ADD_PROGRAM = r"""
#include <stdio.h>
#include "mct_kernels.h"

@TABLES@

static uint32_t state = 88172645u;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 17; state ^= state << 5; return state; }

int main(void) {
    static int8_t a[3000], b[3000], y[3000];
    static uint8_t mask[400];
    static const mct_add_params *const params[] = {@PARAMS@};
    static const mct_add_table *const tables[] = {@TABLE_REFS@};
    long cases = 0, bad = 0;
    for (int t = 0; t < (int)(sizeof params / sizeof params[0]); ++t) {
        const mct_add_params *p = params[t];
        const int32_t n = 1 + (int32_t)(next() % 2999);
        for (int32_t i = 0; i < n; ++i) a[i] = (int8_t)next(), b[i] = (int8_t)next();
        mct_add_tensors(p, tables[t], a, b, y, (t & 1) ? mask : NULL, n);
        for (int32_t i = 0; i < n; ++i) {
            uint8_t inside;
            const int8_t want = mct_add(a[i], b[i], p, &inside);
            cases += 1;
            if (y[i] != want || ((t & 1) && ((mask[i >> 3] >> (i & 7)) & 1) != inside)) {
                if (bad < 5) printf("case %d element %ld: %d, want %d\n", t, (long)i, y[i], want);
                bad += 1;
            }
        }
    }
    printf("cases %ld mismatches %ld\n", cases, bad);
    return bad != 0;
}
"""


def _random_add_params(rng: np.random.Generator) -> AddParams:
    """Constants over the ranges the C must take: left shifts 0..22, rescaling shifts mostly <= 0 (some > 0:
    mct_mbqm's saturation), output shifts -1..-30, any zero points, narrowed clamps."""
    left = int(rng.integers(0, 23)) if rng.random() < 1 / 3 else 20
    qmin, qmax = (-128, 127) if rng.random() < 0.75 else (int(rng.integers(-128, -28)), int(rng.integers(28, 128)))
    multiplier = lambda: int(rng.integers(2**30, 2**31))  # noqa: E731
    return AddParams(left, int(rng.integers(-128, 128)), multiplier(), int(rng.integers(-11, 5)),
                     int(rng.integers(-128, 128)), multiplier(), int(rng.integers(-11, 5)),
                     int(rng.integers(-128, 128)), multiplier(), -int(rng.integers(1, 31)), qmin, qmax)


def test_the_residual_add_tables_equal_the_reference(tmp_path):
    """``mct_add_tensors`` on the generator's operand tables (``add_table_definition``: int8_ops'
    ``add_operand_tables``) gives ``mct_add``'s outputs and mask bits, element by element, for 300 random sets
    of constants; and the NumPy add (which reads the same tables) gives ``mct_add``'s integers by construction of
    the tables from its MBQM (tests/quant's parity)."""
    rng = np.random.default_rng(5)
    cases = [_random_add_params(rng) for _ in range(300)]
    defs = []
    for i, p in enumerate(cases):
        fields = ", ".join(f".{k} = {v}" for k, v in vars(p).items())
        defs.append(f"static const mct_add_params p{i} = {{{fields}}};")
        defs.append(add_table_definition(f"t{i}", p, f"case {i}"))
    program = (ADD_PROGRAM.replace("@TABLES@", "\n".join(defs))
               .replace("@PARAMS@", ", ".join(f"&p{i}" for i in range(len(cases))))
               .replace("@TABLE_REFS@", ", ".join(f"&t{i}" for i in range(len(cases)))))
    result = _run_against_kernels(tmp_path, program)
    assert result.returncode == 0, result.stdout
    assert "mismatches 0" in result.stdout and int(result.stdout.split()[1]) > 300 * 1000, result.stdout
