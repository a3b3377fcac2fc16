"""Compiled 8-bit matrix products for the int8 CPU step (charlm.int8_lstm).

A generated character reads every weight once, so a step's cost is the bytes of the
weights and the multiply-adds over them. Here the weights are int8, one row per output
(contiguous along the input), and the activations are uint8 (h in (-1, 1) stored as
round(63 h) + 64, see charlm.quantize). A row's dot product is an exact int32 sum.

The inner loop is written in LLVM IR (a numba intrinsic) because numba's loops do not
vectorise it well: LLVM picks 8 lanes and half-width `pmaddwd` for a plain
`acc += int32(w[k]) * int32(x[k])` loop. On x86 with AVX2 the IR calls `vpmaddubsw`
(32 uint8 x int8 products, added in pairs to int16) then `vpmaddwd` by ones (to int32):
two instructions per 32 multiply-adds, where float32 needs four FMAs. `vpmaddubsw`
saturates its int16 pair sums, so the quantisation keeps |x0*w0 + x1*w1| <= 32,767:
activations in [0, 127] (7 bits), weights in [-127, 127]. Every sum is exact. (The
other split, 8-bit activations and weights within +-64, was as fast and as good in
bits/char, but its argmax continuations of alice's held-out prompts left float32's
twice as early: the weights' rounding is what moves a near-tie.) Without AVX2 (or VNNI's
`vpdpbusd`, which this CPU lacks) the same IR is plain vector multiplies and adds, with
the same exact sums.

Blocks of rows: `_dot(rw, rx)` computes rw weight rows against rx activation rows in one
pass over the inputs, so each loaded vector is used rw or rx times (4 x 2 for batches,
1 x 1 for a single stream, where one pass per weight row is all there is to do).
"""

from __future__ import annotations

import numpy as np
from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from charlm.kernels import _gates

LANES = 32
"""Inputs per vector step: rows are padded with zeros to a multiple of this."""

def _host_avx2() -> bool:
    """Whether numba compiles for this CPU and it has AVX2. With NUMBA_CPU_NAME (say
    "generic", for caches shared between machines) the AVX2 intrinsics might not exist
    on the target, so the portable IR is used."""
    from numba.core import config

    if config.CPU_NAME not in (None, "host") or config.CPU_FEATURES:
        return False
    return bool(_llvm.get_host_cpu_features().get("avx2", False))


HAS_AVX2 = _host_avx2()


def _compiled(fn):
    """njit like charlm.kernels: GIL released, on-disk cache where the package is writable."""
    try:
        return njit(cache=True, nogil=True, error_model="numpy")(fn)
    except RuntimeError:  # no writable cache location
        return njit(cache=False, nogil=True, error_model="numpy")(fn)


def _dot(rw: int, rx: int, avx2: bool = HAS_AVX2):
    """An intrinsic (w_addr, w_stride, x_addr, x_stride, k) -> rw * rx int32 sums, in
    order w-row major: sum_k w[r, k] * x[c, k] for r < rw, c < rx. Addresses are of
    int8 weights and uint8 activations, strides in bytes, k a multiple of LANES."""

    @intrinsic
    def dot(typingctx, w_addr, w_stride, x_addr, x_stride, k):
        ret = types.UniTuple(types.int32, rw * rx)
        sig = ret(types.int64, types.int64, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            w_addr, w_stride, x_addr, x_stride, k = args
            i8, i16, i32, i64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
            v32i8, v16i16, v8i32 = ir.VectorType(i8, 32), ir.VectorType(i16, 16), ir.VectorType(i32, 8)
            wptr = builder.inttoptr(w_addr, i8.as_pointer())
            xptr = builder.inttoptr(x_addr, i8.as_pointer())
            accs = [cgutils.alloca_once_value(builder, ir.Constant(v8i32, [0] * 8)) for _ in range(rw * rx)]
            if avx2:
                madd_ub = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(v16i16, [v32i8, v32i8]), "llvm.x86.avx2.pmadd.ub.sw")
                madd_wd = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(v8i32, [v16i16, v16i16]), "llvm.x86.avx2.pmadd.wd")
                ones = ir.Constant(v16i16, [1] * 16)

                def products(x, w):  # 32 uint8 x int8 -> 8 int32, each the sum of 4 neighbours
                    return builder.call(madd_wd, [builder.call(madd_ub, [x, w]), ones])
            else:
                v32i32 = ir.VectorType(i32, 32)
                quads = [ir.Constant(v8i32, list(range(q, 32, 4))) for q in range(4)]

                def products(x, w):  # the same sums in plain vector IR
                    p = builder.mul(builder.zext(x, v32i32), builder.sext(w, v32i32))
                    parts = [builder.shuffle_vector(p, p, q) for q in quads]
                    return builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))

            def vector_at(base, stride, row, idx):
                off = builder.add(builder.mul(stride, ir.Constant(i64, row)), idx)
                return builder.load(builder.bitcast(builder.gep(base, [off]), v32i8.as_pointer()), align=1)

            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), k, ir.Constant(i64, LANES)) as (idx, _):
                ws = [vector_at(wptr, w_stride, r, idx) for r in range(rw)]
                for c in range(rx):
                    x = vector_at(xptr, x_stride, c, idx)
                    for r in range(rw):
                        acc = accs[r * rx + c]
                        builder.store(builder.add(builder.load(acc), products(x, ws[r])), acc)
            sums = _horizontal_sums(builder, [builder.load(acc) for acc in accs])
            return context.make_tuple(builder, ret, sums)

        return sig, codegen

    return dot


def _horizontal_sums(builder, vectors: list) -> list:
    """The lane sums of each 8 x int32 vector. Eight at a time by a transpose-and-add
    tree (7 vector adds for 8 sums, instead of 7 scalar adds each)."""
    i32 = ir.IntType(32)
    if len(vectors) % 8:
        sums = []
        for v in vectors:
            total = builder.extract_element(v, ir.Constant(i32, 0))
            for e in range(1, 8):
                total = builder.add(total, builder.extract_element(v, ir.Constant(i32, e)))
            sums.append(total)
        return sums

    def fold(a, b, width):  # lanes of a and b paired `width` apart, halves added
        lo = [i + (8 if (i // width) % 2 else 0) - (width if (i // width) % 2 else 0) for i in range(8)]
        hi = [x + width for x in lo]
        pick = lambda idx: builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 8), idx))  # noqa: E731
        return builder.add(pick(lo), pick(hi))

    sums = []
    for g in range(0, len(vectors), 8):
        v = vectors[g : g + 8]
        v = [fold(v[i], v[i + 1], 1) for i in range(0, 8, 2)]
        v = [fold(v[i], v[i + 1], 2) for i in range(0, 4, 2)]
        v = fold(v[0], v[1], 4)
        sums += [builder.extract_element(v, ir.Constant(i32, e)) for e in range(8)]
    return sums


_dot_1x1 = _dot(1, 1)
_dot_4x2 = _dot(4, 2)


@_compiled
def qmatmul(x, w, offset, scale, out):
    """out[b, j] = (sum_k x[b, k] * w[j, k] - offset[j]) * scale[j], float32.

    x (batch, k) uint8 and w (outputs, k) int8 are C-contiguous with k a multiple of
    LANES; `offset` (int32) removes the activations' zero point (X_ZERO * the row's sum),
    `scale` turns the exact integer sum back into the float product."""
    n, k = w.shape
    batch = x.shape[0]
    wa, xa = w.ctypes.data, x.ctypes.data
    j = 0
    if batch >= 2:
        while j + 4 <= n:
            b = 0
            while b + 2 <= batch:
                s = _dot_4x2(wa + j * k, k, xa + b * k, k, k)
                for r in range(4):
                    out[b, j + r] = np.float32(s[2 * r] - offset[j + r]) * scale[j + r]
                    out[b + 1, j + r] = np.float32(s[2 * r + 1] - offset[j + r]) * scale[j + r]
                b += 2
            if b < batch:
                for r in range(4):
                    out[b, j + r] = np.float32(_dot_1x1(wa + (j + r) * k, k, xa + b * k, k, k)[0]
                                               - offset[j + r]) * scale[j + r]
            j += 4
    while j < n:
        for b in range(batch):
            out[b, j] = np.float32(_dot_1x1(wa + j * k, k, xa + b * k, k, k)[0] - offset[j]) * scale[j]
        j += 1


@_compiled
def qmatmul_int(x, w, out):
    """out[b, j] = sum_k x[b, k] * w[j, k] as int32, exactly (for tests and checks)."""
    n, k = w.shape
    wa, xa = w.ctypes.data, x.ctypes.data
    for j in range(n):
        for b in range(x.shape[0]):
            out[b, j] = _dot_1x1(wa + j * k, k, xa + b * k, k, k)[0]


@_compiled
def qmatmul_int_blocked(x, w, out):
    """As qmatmul_int through the 4 x 2 blocks where they fit (for tests)."""
    n, k = w.shape
    batch = x.shape[0]
    wa, xa = w.ctypes.data, x.ctypes.data
    for j in range(0, n - n % 4, 4):
        for b in range(0, batch - batch % 2, 2):
            s = _dot_4x2(wa + j * k, k, xa + b * k, k, k)
            for r in range(4):
                out[b, j + r] = s[2 * r]
                out[b + 1, j + r] = s[2 * r + 1]


X_SCALE = 63.0
X_ZERO = 64
"""Activations h in (-1, 1) are stored as round(63 h) + 64, in [1, 127]: with weights in
[-127, 127], vpmaddubsw's pair sums stay within 2 * 127 * 127 = 32,258, so none saturates."""


@_compiled
def quantize_rows(h, out):
    """h (batch, units) float32 in [-1, 1] -> out (batch, >= units) uint8, round(63 h) + 64.
    Columns past `units` are padding: the weights there are zero, so they are never read
    into a sum."""
    for b in range(h.shape[0]):
        hb, ob = h[b], out[b]
        for j in range(h.shape[1]):
            v = hb[j] * np.float32(X_SCALE)
            v = v if v < np.float32(X_SCALE) else np.float32(X_SCALE)
            v = v if v > -np.float32(X_SCALE) else -np.float32(X_SCALE)
            ob[j] = np.uint8(np.int32(np.rint(v)) + X_ZERO)


@_compiled
def cell_stacked(z, bias, c, h):
    """A later layer whose input and recurrent products are one stacked product `z`
    (overwritten): pre-activations z + bias, then the gates of charlm.kernels."""
    for r in range(c.shape[0]):
        zr = z[r]
        for k in range(zr.shape[0]):
            zr[k] += bias[k]
    _gates(z, c, h)


@_compiled
def cell_table(z, table, table_scale, ids, c, h):
    """The first layer: pre-activations z (h @ recurrent, overwritten) plus each row's
    character's row of the int16 `table` (embedding @ kernel + bias) times its scale,
    then the gates of charlm.kernels."""
    for r in range(c.shape[0]):
        zr, row, scale = z[r], table[ids[r]], table_scale[ids[r]]
        for k in range(zr.shape[0]):
            zr[k] += np.float32(row[k]) * scale
    _gates(z, c, h)
