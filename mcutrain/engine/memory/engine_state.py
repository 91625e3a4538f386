"""The training engine's own state in SRAM, besides the arena and the trained parameter copies.

Why it is a number here: mcutrain counts everything that lives in SRAM (DESIGN.md section 6), and the
generated C keeps a few words of state across steps that are neither tensors (the arena) nor
parameters (the copies): the step counter (the stochastic rounding's RNG step) and the guard that
rolls back a blown-up training run (``codegen/templates/model.c.in``, ``mct_engine_state``): the
runtime learning rate, the running loss estimate and its lowest value, the rollback counter, the last step's status
flags, the healthy-step counter, the state of the guard's snapshot and the pointer to the caller's
snapshot buffer. Eleven 4-byte words on a device with 32-bit pointers (the Cortex-M7); ``model.c``
refuses to compile on such a device if its struct is any other size (``MCT_STATE_BYTES``), so this
figure and the C cannot drift apart. The caller's snapshot buffer itself (``MCT_SAVE_BYTES``, lent
with ``mct_guard_buffer``) is the caller's SRAM and is not counted here, as the caller's image buffer
is not: without it the guard restores the initial parameters from Flash, at no SRAM cost.
"""

__all__ = ["ENGINE_STATE_BYTES", "ENGINE_STATE_FIELDS"]

# (field, bytes on a 32-bit device), in the order of model.c's ``mct_engine_state``.
ENGINE_STATE_FIELDS = (("steps", 4), ("lr", 4), ("loss_average", 4), ("loss_best", 4), ("samples", 4), ("probation", 4), ("rollbacks", 4),
                       ("status", 4), ("healthy_steps", 4), ("snapshot", 4), ("snapshot_buf", 4))
ENGINE_STATE_BYTES = sum(size for _, size in ENGINE_STATE_FIELDS)
