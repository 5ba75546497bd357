"""The floating-point environment of the CPU kernels: no subnormal numbers.

Intel cores take a microcode assist of about a hundred cycles for every
float32 operation with a subnormal operand or result (AMD Zen cores handle
most in hardware).  Training produces them in bulk: the Adam moments of
weights whose gradient is 0 (dead ReLU units) decay geometrically through
the subnormal range, and saturated sigmoid outputs feed ``h * (1 - h)``.  A
trained model then ran up to 19x slower per epoch on an Intel Xeon.

So every compiled CPU entry point runs with the SSE control register's
flush-to-zero (FTZ, bit 15) and denormals-are-zero (DAZ, bit 6) set, and
puts the caller's register back on exit::

    old = fpenv.enter()
    ...                       # the kernel's work
    fpenv.leave(old)

The work between the two calls must read its operands from arrays and write
its results to arrays, as every kernel does: the intrinsics may touch memory,
so LLVM keeps loads and stores on their side of them, but it may move pure
arithmetic on scalar arguments across.

MXCSR is per thread, so an entry point's parallel loop sets it inside every
iteration (numba's worker threads), and a host program that embeds sparseae
sees its own floating-point state unchanged after any call.  The CUDA kernels
already flush subnormals (``fastmath``), so CPU and GPU agree on this.

Where the register does not exist (not x86), :func:`enter` and :func:`leave`
do nothing and the kernels rely on two guards that hold everywhere: the Adam
moments are flushed to exactly 0 below the smallest normal float32
(``contract.flush_tiny``),
and the sigmoid's argument is clamped so that its output stays a normal
number.  On x86 the guards never fire (FTZ already gives 0), so results are
the same with and without them.
"""

import platform

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, register_jitable

#: FTZ (bit 15) and DAZ (bit 6) of MXCSR.
FTZ_DAZ = np.uint32(0x8040)

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def _mxcsr_call(builder, name, slot):
    i8p = ir.IntType(8).as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i8p])
    fn = builder.module.declare_intrinsic(name, fnty=fnty)
    # the intrinsics have side effects and may touch memory, so LLVM keeps the
    # kernel's loads and stores on their side of the call
    builder.call(fn, [builder.bitcast(slot, i8p)])


@intrinsic
def _read_mxcsr(typingctx):
    def codegen(context, builder, signature, args):
        slot = builder.alloca(ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.load(slot)

    return types.uint32(), codegen


@intrinsic
def _write_mxcsr(typingctx, value):
    def codegen(context, builder, signature, args):
        slot = builder.alloca(ir.IntType(32))
        builder.store(args[0], slot)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()

    return types.void(types.uint32), codegen


if X86:

    @register_jitable
    def read():
        """The calling thread's MXCSR."""
        return _read_mxcsr()

    @register_jitable
    def write(value):
        """Set the calling thread's MXCSR."""
        _write_mxcsr(np.uint32(value))

    @register_jitable
    def enter():
        """Set FTZ and DAZ for this thread; return the register to restore."""
        old = _read_mxcsr()
        _write_mxcsr(old | FTZ_DAZ)
        return old

    @register_jitable
    def leave(old):
        """Restore the register :func:`enter` returned."""
        _write_mxcsr(old)

else:  # pragma: no cover - exercised only off x86

    @register_jitable
    def read():
        return np.uint32(0)

    @register_jitable
    def write(value):
        pass

    @register_jitable
    def enter():
        return np.uint32(0)

    @register_jitable
    def leave(old):
        pass


@njit(cache=False, nogil=True)
def get_mxcsr():
    """The calling thread's MXCSR, from Python (0 off x86); for tests and benchmarks."""
    return read()


@njit(cache=False, nogil=True)
def set_mxcsr(value):
    """Set the calling thread's MXCSR from Python (a no-op off x86)."""
    write(value)
