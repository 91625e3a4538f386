"""The Cortex-M cores a generated folder can be built for: one row each, read by the firmware build and
its QEMU runner (``mcutrain.codegen.firmware``).

Why a table: the cores differ only in facts (compiler flags, which extensions the kernels may use, the
QEMU board that runs them and where that board keeps its memories and its timer, and the memory of a
typical part), while the generated C, the harness and the runner are the same for all. Adding a core
is adding a row, checked by ``tests/codegen/test_codegen_cores.py``.

Each row names two memories, and they are different things:
- ``part``: the typical chip's Flash and SRAM (stated below), which the build checks the program against
  before linking (``MemoryOverflowError``) and which bench tables report;
- the QEMU board's address map (``flash_origin``, ``ram_origin``, ``hostio_origin``): where that memory
  sits on the emulated board. Each board's regions are larger than the part's (its SRAM is megabytes
  of FPGA RAM), so the part's limits are enforced by the linker script, not by the board.

The boards, from QEMU 7.2's own memory tree (``info mtree``) and a probe firmware run on each:
- mps2-an500 (Cortex-M7), mps2-an386 (Cortex-M4), mps2-an385 (Cortex-M3): code at 0x0, SRAM at
  0x20000000; the CMSDK APB timer 0 at 0x40000000 counts down at 25 MHz (40 instructions per tick under
  ``-icount shift=0``, one instruction per virtual nanosecond).
- mps2-an505 (Cortex-M33, TrustZone): the core starts in the Secure state with the SAU off, so every
  address is Secure and the Secure aliases are used: code at 0x10000000 (the reset vector table's
  address), SRAM at 0x38000000; the timer is the same CMSDK timer at 0x40000000 but clocked at 20 MHz
  (50 instructions per tick).
- mps3-an547 (Cortex-M55, Helium): the vector table must sit in the ITCM (0x10000000, Secure alias);
  SRAM is the DTCM at 0x30000000. It has no CMSDK timer that counts faster than 32 kHz; the clock is
  the SSE-300 system counter (enabled at 0x58100000, read at 0x48000000: CNTPCT), 32 MHz, counting up
  (31.25 instructions per tick). The ITCM (512 KB) is too small for the paper networks' code, so code
  and constants go to the board's 2 MB SRAM at 0x11000000 and only the vector table stays in the ITCM.
- The sample and save buffers (``.hostio``) go to RAM the board has beyond the measured SRAM.

The typical parts (their datasheets' on-chip memory):
- cortex-m7: STMicroelectronics STM32F746 (1 MB Flash, 320 KB SRAM), the paper's board;
- cortex-m4: Nordic nRF52840 (Cortex-M4F with DSP; 1 MB Flash, 256 KB SRAM);
- cortex-m33: Nordic nRF5340 application core (Cortex-M33 with FPU and DSP; 1 MB Flash, 512 KB SRAM);
- cortex-m55: the Arm Corstone-300 subsystem as the AN547 image builds it, held to 256 KB of its DTCM
  (the paper's budget) and 2 MB of code memory (the parts ship Flash or MRAM of that order);
- cortex-m3: STMicroelectronics STM32F207 (no FPU, no DSP extension; 1 MB Flash, 128 KB SRAM).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CORES", "Core", "MemoryMap", "STACK_RESERVE", "core_of"]

# The stack the linker keeps free above .bss. The kernels do not recurse and keep no tensors on the stack
# (every tensor is in the arena); the DSP kernels' two 2 KB stack buffers (the 1x1 convs' widened input,
# a small depthwise plane with its padding; their frames are never nested) make the deepest path measured
# 3,924 bytes on the paper networks (the harness's logits included), so 6 KB leaves 2 KB of room; every
# run checks it (stack_high_water, stack_within_reserve).
STACK_RESERVE = 6 * 1024


@dataclass(frozen=True)
class MemoryMap:
    """The memory a firmware is linked for: Flash and SRAM sizes, and the stack kept free in SRAM."""

    name: str
    flash_bytes: int
    ram_bytes: int
    stack_bytes: int = STACK_RESERVE


@dataclass(frozen=True)
class Core:
    """One Cortex-M core: how to compile for it, which kernels it runs, and the QEMU board that runs it."""

    name: str                    # the --target name, e.g. "cortex-m7"
    arch_flags: tuple[str, ...]  # -mcpu / -mthumb / float ABI and FPU: also select the C library's variant
    fpu: bool                    # a single-precision FPU: the float32 backward runs in hardware
    dsp: bool                    # the DSP extension (SMLAD, SXTB16, ...): the "dsp" kernels build
    part: MemoryMap              # the typical chip's Flash and SRAM (module docstring)
    machine: str                 # qemu-system-arm -M
    vector_origin: int           # where the board reads the reset vector table
    flash_origin: int            # code and constants
    ram_origin: int              # the measured SRAM (.data, .bss, stack)
    hostio_origin: int           # the harness's sample and save buffers, outside the measured SRAM
    timer: str                   # "cmsdk": CMSDK APB timer 0 (down counter); "sse": SSE-300 system counter
    timer_base: int              # cmsdk: the timer's registers; sse: the counter's read frame (CNTPCT)
    instructions_per_tick: float  # under -icount shift=0: 1e9 / the timer's clock in Hz
    counter_control: int = 0     # sse: the system counter's control frame (CNTCR), where it is enabled

    @property
    def kernels(self) -> tuple[str, ...]:
        """The forward kernel sets this core runs, its default first."""
        return ("dsp", "portable") if self.dsp else ("portable",)

    def board_defines(self) -> tuple[str, ...]:
        """The -D flags that tell board.c where this board's timer is and how it counts."""
        kind = {"cmsdk": "MCT_TIMER_CMSDK", "sse": "MCT_TIMER_SSE"}[self.timer]
        control = (f"-DMCT_COUNTER_CONTROL=0x{self.counter_control:08X}u",) if self.timer == "sse" else ()
        return (f"-D{kind}=1", f"-DMCT_TIMER_BASE=0x{self.timer_base:08X}u") + control


_MPS2 = dict(vector_origin=0x0, flash_origin=0x0, ram_origin=0x20000000, timer="cmsdk", timer_base=0x40000000,
             instructions_per_tick=40.0)

CORES: dict[str, Core] = {core.name: core for core in (
    Core("cortex-m7", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), True, True,
         MemoryMap("stm32f746", 1024 * 1024, 320 * 1024), "mps2-an500", hostio_origin=0x60000000, **_MPS2),
    Core("cortex-m4", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), True, True,
         MemoryMap("nrf52840", 1024 * 1024, 256 * 1024), "mps2-an386", hostio_origin=0x21000000, **_MPS2),
    Core("cortex-m33", ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), True, True,
         MemoryMap("nrf5340-app", 1024 * 1024, 512 * 1024), "mps2-an505", vector_origin=0x10000000,
         flash_origin=0x10000000, ram_origin=0x38000000, hostio_origin=0x80000000, timer="cmsdk",
         timer_base=0x40000000, instructions_per_tick=50.0),
    Core("cortex-m55", ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"), True, True,
         MemoryMap("corstone-300", 2 * 1024 * 1024, 256 * 1024), "mps3-an547", vector_origin=0x10000000,
         flash_origin=0x11000000, ram_origin=0x30000000, hostio_origin=0x70000000, timer="sse",
         timer_base=0x48000000, instructions_per_tick=31.25, counter_control=0x58100000),
    Core("cortex-m3", ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"), False, False,
         MemoryMap("stm32f207", 1024 * 1024, 128 * 1024), "mps2-an385", hostio_origin=0x21000000, **_MPS2),
)}


def core_of(name: str) -> Core:
    """The row for ``name``; a clear error naming the cores otherwise."""
    from mcutrain.codegen.errors import CodegenError

    if name not in CORES:
        raise CodegenError(f"unknown core {name!r}; cores: {', '.join(CORES)}")
    return CORES[name]
