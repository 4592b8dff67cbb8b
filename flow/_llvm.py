"""Explicit vector kernels for the flow solver: LLVM IR emitted as text, JIT-compiled for this CPU.

LLVM's loop vectoriser gives up on the solver's loops (many arrays read and written at row
offsets it cannot tell apart), so `flow.vector_iteration` and `flow.vector_warp` write their
vectors out: `Block` emits straight-line IR over `<LANES x float>` vectors (LLVM splits them into
the host's registers: one AVX-512 register, two AVX2 ones), and `compile_module` compiles a
module once per process with `llvmlite`, numba's own LLVM binding (no added dependency). The IR
has no fast-math flags, so LLVM neither reassociates nor contracts (no fused multiply-add unless
written as `llvm.fma`): every lane computes the IEEE operations written, in the order written.
"""

from __future__ import annotations

import os
import struct
import threading

import numpy as np

# Lanes per vector.
LANES = 16


def f32(value: float) -> str:
    """An LLVM float constant: the float32 value, written as the hex of its double."""
    rounded = struct.unpack("<f", struct.pack("<f", value))[0]
    return f"0x{struct.unpack('<Q', struct.pack('<d', rounded))[0]:016X}"


class Block:
    """IR for blocks of LANES lanes: fresh SSA names, one text buffer, and the block's mask of
    lanes inside the row (None for a whole block: plain loads and stores)."""

    def __init__(self, lines: list[str], counter: list[int]):
        self.lines, self.counter, self.n = lines, counter, LANES
        self.f = f"<{LANES} x float>"
        self.d = f"<{LANES} x double>"
        self.b = f"<{LANES} x i1>"
        self.mask: str | None = None

    def op(self, text: str) -> str:
        self.counter[0] += 1
        out = f"%t{self.counter[0]}"
        self.lines.append(f"  {out} = {text}")
        return out

    def splat(self, scalar: str, kind: str = "float") -> str:
        """A vector of copies of the IR value or constant `scalar`."""
        if not scalar.startswith("%"):
            return f"splat ({kind} {scalar})"
        one = self.op(f"insertelement <{self.n} x {kind}> poison, {kind} {scalar}, i64 0")
        return self.op(
            f"shufflevector <{self.n} x {kind}> {one}, <{self.n} x {kind}> poison,"
            f" <{self.n} x i32> zeroinitializer"
        )

    def lanes_below(self, x: str, limit: str) -> str:
        """The mask of lanes i with x + i < limit (i64 IR values)."""
        iota = ", ".join(f"i64 {i}" for i in range(self.n))
        index = self.op(f"add <{self.n} x i64> {self.splat(x, 'i64')}, <{iota}>")
        return self.op(f"icmp slt <{self.n} x i64> {index}, {self.splat(limit, 'i64')}")

    def load(self, base: str, index: str, mask: str | None = None) -> str:
        """The lanes at base[index...]; under `mask` (default the block's), zero elsewhere."""
        mask = mask or self.mask
        ptr = self.op(f"getelementptr inbounds float, ptr {base}, i64 {index}")
        if mask is None:
            return self.op(f"load {self.f}, ptr {ptr}, align 4")
        return self.op(
            f"call {self.f} @llvm.masked.load.v{self.n}f32.p0(ptr {ptr}, i32 4,"
            f" {self.b} {mask}, {self.f} zeroinitializer)"
        )

    def store(self, value: str, base: str, index: str, element: str = "float") -> None:
        """Stores the lanes at base[index...] (elements "float" or "i64"), under the block's
        mask if it has one."""
        ptr = self.op(f"getelementptr inbounds {element}, ptr {base}, i64 {index}")
        vector, size = f"<{self.n} x {element}>", 4 if element == "float" else 8
        if self.mask is None:
            self.lines.append(f"  store {vector} {value}, ptr {ptr}, align {size}")
        else:
            name = f"v{self.n}{'f32' if element == 'float' else element}"
            self.lines.append(
                f"  call void @llvm.masked.store.{name}.p0({vector} {value}, ptr {ptr},"
                f" i32 {size}, {self.b} {self.mask})"
            )

    def bin(self, opcode: str, a: str, b: str, ty: str | None = None) -> str:
        return self.op(f"{opcode} {ty or self.f} {a}, {b}")

    def select(self, mask: str, a: str, b: str) -> str:
        return self.op(f"select {self.b} {mask}, {self.f} {a}, {self.f} {b}")

    def hypot(self, x: str, y: str) -> str:
        """float(sqrt(double(x)^2 + double(y)^2)): OpenCV's `(float)std::hypot` value."""
        xd = self.op(f"fpext {self.f} {x} to {self.d}")
        yd = self.op(f"fpext {self.f} {y} to {self.d}")
        xx = self.bin("fmul", xd, xd, self.d)
        s = self.bin("fadd", xx, self.bin("fmul", yd, yd, self.d), self.d)
        r = self.op(f"call {self.d} @llvm.sqrt.v{self.n}f64({self.d} {s})")
        return self.op(f"fptrunc {self.d} {r} to {self.f}")


def block_loop(e: Block, start: str, stop: str, body, combine=None, tail: bool = False):
    """Emits `for x = start; x + LANES <= stop; x += LANES: body(x)` over whole blocks (x, stop:
    i64 IR values), then, if `tail`, `body(x)` once more under the mask of lanes below `stop`
    where any are left. `body(x)` emits straight-line IR for the block at x (with `e`'s mask set
    for the masked block) and returns a value to fold with `combine`, (IR type, opcode) such as
    ("<16 x float>", "fadd"), starting from zero; or None without `combine`.

    Returns (the first x the whole blocks did not reach, the folded value or None), valid in the
    block the emitted code ends in, where the caller goes on."""
    e.counter[0] += 1
    tag = f"%B{e.counter[0]}"
    pre, head, run, rest, masked, done = (
        f"B{e.counter[0]}.{s}" for s in ("pre", "head", "body", "rest", "tail", "done")
    )
    lines = e.lines
    lines += [f"  br label %{pre}", f"{pre}:", f"  br label %{head}", f"{head}:"]
    x = f"{tag}.x"
    lines.append(f"  {x} = phi i64 [ {start}, %{pre} ], [ {tag}.xn, %{run} ]")
    acc = None
    if combine is not None:
        kind, opcode = combine
        acc = f"{tag}.acc"
        lines.append(f"  {acc} = phi {kind} [ zeroinitializer, %{pre} ], [ {tag}.accn, %{run} ]")
    lines.append(f"  {tag}.xn = add i64 {x}, {LANES}")
    lines.append(f"  {tag}.fit = icmp sle i64 {tag}.xn, {stop}")
    lines.append(f"  br i1 {tag}.fit, label %{run}, label %{rest}")
    lines.append(f"{run}:")
    value = body(x)
    if combine is not None:
        lines.append(f"  {tag}.accn = {opcode} {kind} {acc}, {value}")
    lines += [f"  br label %{head}", f"{rest}:"]
    if not tail:
        return x, acc
    lines.append(f"  {tag}.left = icmp slt i64 {x}, {stop}")
    lines.append(f"  br i1 {tag}.left, label %{masked}, label %{done}")
    lines.append(f"{masked}:")
    outer, e.mask = e.mask, e.lanes_below(x, stop)
    value = body(x)
    e.mask = outer
    if combine is not None:
        lines.append(f"  {tag}.acct = {opcode} {kind} {acc}, {value}")
    lines += [f"  br label %{done}", f"{done}:"]
    if combine is not None:
        lines.append(f"  {tag}.accd = phi {kind} [ {acc}, %{rest} ], [ {tag}.acct, %{masked} ]")
        acc = f"{tag}.accd"
    return x, acc


# Compiled kernels by name: (ctypes function, the engine that owns its code). The engines are
# kept for the life of the process, so the functions stay valid; the lock keeps two threads
# from compiling (and one of them from freeing) the same kernel.
_KERNELS: dict[str, tuple] = {}
_LOCK = threading.Lock()


def kernel(name: str, make_ir, signature):
    """The ctypes function `name` (of type `signature`, a ctypes.CFUNCTYPE) from the module
    `make_ir()` returns, compiled on first use in this process."""
    with _LOCK:
        if name not in _KERNELS:
            addresses, engine = compile_module(make_ir(), (name,))
            _KERNELS[name] = (signature(addresses[name]), engine)
        return _KERNELS[name][0]


def pointers(shape: tuple[int, int], **arrays) -> list[int]:
    """The data addresses of the named arrays, after checking that each is C-contiguous float32
    of `shape` (the kernels read and write them as raw rows); ValueError naming the first that
    is not."""
    out = []
    for name, a in arrays.items():
        if a.shape != shape or a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError(
                f"{name}: expected C-contiguous float32 {shape}, got {a.dtype} {a.shape}"
            )
        out.append(a.ctypes.data)
    return out


# Compile for this CPU model instead of the host's (an LLVM CPU name such as "haswell", or
# "x86-64" for the baseline): the tests check that the kernels give the same bits when compiled
# for older instruction sets (AVX2, SSE2) than the machine they run on.
CPU_ENV = "PERFNET_LLVM_CPU"


def compile_module(ir_text: str, names: tuple[str, ...]):
    """Compiles the IR module for this CPU (optimised as -O3; or for the CPU model named by
    $PERFNET_LLVM_CPU); returns ({name: function address}, the engine that owns the code: keep
    it alive as long as the addresses are used)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    cpu = os.environ.get(CPU_ENV)
    if cpu:  # that model's own features only
        machine = target.create_target_machine(cpu=cpu, features="", opt=3)
    else:
        machine = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
        )
    module = llvm.parse_assembly(ir_text)
    module.verify()
    builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3))
    builder.getModulePassManager().run(module, builder)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    return {name: engine.get_function_address(name) for name in names}, engine
