"""The wrpn ops from Python: torch.ops.load_library(libwrpn.so), then torch.ops.wrpn.*.

Checks values against a torch reference of spec.md's formulas bit for bit, the packed mask,
autograd (the gradient is the straight-through mask; gradcheck does not apply to a step
function), error messages, meta tensors, and CUDA against CPU when a GPU is present.
Usage: python test_ops.py path/to/libwrpn.so
"""
import math
import sys

import torch

torch.ops.load_library(sys.argv[1])
ops = torch.ops.wrpn

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def opmath(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def ref_fake_quant(x, lo, hi, s):
    v = x.to(opmath(x.dtype))
    scale = torch.full_like(v, s)
    return (v.clamp(lo, hi) * scale).round().div(scale).to(x.dtype)


def ref_binary(w):
    v = w.to(opmath(w.dtype))
    a = w.double().abs().sum().item() / w.numel()
    pos = torch.full_like(v, a)
    return torch.where(v >= 0, pos, torch.where(v < 0, -pos, v)).to(w.dtype)


def ref_weight(w, bits):
    return ref_binary(w) if bits == 1 else ref_fake_quant(w, -1.0, 1.0, 2 ** (bits - 1) - 1)


def ref_activation(x, bits):
    return ref_fake_quant(x, 0.0, 1.0, 2**bits - 1)


def weight_pass(w):
    return (w >= -1) & (w <= 1)


def activation_pass(x):
    return (x >= 0) & (x <= 1)


def bit_diff(got, want):
    """'' when dtype, shape and bits agree (NaN matches any NaN), else a description."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return f"{got.dtype}{tuple(got.shape)} vs {want.dtype}{tuple(want.shape)}"
    a = got.detach().cpu().contiguous().reshape(-1)
    b = want.detach().cpu().contiguous().reshape(-1)
    if a.numel() == 0:
        return ""
    if a.dtype == torch.bool or a.dtype == torch.uint8:
        ok = a == b
    else:
        it = INT_OF_SIZE[a.element_size()]
        ok = (a.isnan() == b.isnan()) & (a.isnan() | (a.view(it) == b.view(it)))
    if bool(ok.all()):
        return ""
    i = int((~ok).nonzero()[0, 0])
    return f"{int((~ok).sum())} of {a.numel()} differ; first at {i}: {a[i].item()} vs {b[i].item()}"


def unpack_loop(mask, n):
    """bit i of byte j is element 8j + i."""
    data = mask.cpu().tolist()
    return torch.tensor([(data[i // 8] >> (i % 8)) & 1 == 1 for i in range(n)], dtype=torch.bool)


def make_input(n, dtype, seed, binary=False):
    g = torch.Generator().manual_seed(seed)
    if binary:
        v = (torch.randn(n, generator=g, dtype=torch.float64) * 1.5).clamp(-7.5, 7.5)
        return (v * 4096).round().div(4096).to(dtype)
    v = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 1.5
    specials = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, math.nan, math.inf, -math.inf,
                             1e30, 1.5, 2.5], dtype=torch.float64)
    pick = torch.rand(n, generator=g) < 0.1
    which = torch.randint(0, specials.numel(), (n,), generator=g)
    return torch.where(pick, specials[which], v).to(dtype)


def expect_error(fn, exc_type, needles):
    try:
        fn()
    except exc_type as e:
        msg = str(e)
        for needle in needles:
            assert needle in msg, f"message {msg!r} lacks {needle!r}"
        return
    raise AssertionError(f"expected {exc_type.__name__} containing {needles}")


def check_forward(x, bits, weight):
    quant = ops.quantize_weight if weight else ops.quantize_activation
    fwd = ops._quantize_weight_forward if weight else ops._quantize_activation_forward
    want = ref_weight(x, bits) if weight else ref_activation(x, bits)
    passing = weight_pass(x) if weight else activation_pass(x)
    d = bit_diff(quant(x, bits), want)
    assert d == "", f"{quant} bits={bits} {x.dtype} {x.device}: {d}"
    q, mask = fwd(x, bits)
    assert bit_diff(q, want) == ""
    assert mask.dtype == torch.uint8 and mask.shape == ((x.numel() + 7) // 8,), mask.shape
    assert torch.equal(unpack_loop(mask, x.numel()), passing.cpu().reshape(-1))
    g = torch.randn(x.shape, dtype=torch.float64).to(x.dtype).to(x.device)
    g[..., ::5] = math.nan
    want_grad = torch.where(passing, g, torch.zeros_like(g))
    assert bit_diff(ops._masked_grad(g, mask), want_grad) == ""
    leaf = x.detach().clone().requires_grad_(True)
    quant(leaf, bits).backward(g)
    assert bit_diff(leaf.grad, want_grad) == "", bit_diff(leaf.grad, want_grad)
    return q, mask


def test_cpu():
    # Hand values: ternary weights, 4-bit weights (step 1/7), ties to even.
    w = torch.tensor([-2.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 2.0])
    assert bit_diff(ops.quantize_weight(w, 2),
                    torch.tensor([-1.0, -1.0, -0.0, -0.0, 0.0, 0.0, 0.0, 1.0, 1.0])) == ""
    q4 = ops.quantize_weight(torch.tensor([0.3, -0.6, 0.5, 0.07]), 4)
    s7 = torch.tensor(7.0)
    want4 = torch.stack([torch.tensor(2.0) / s7, torch.tensor(-4.0) / s7,
                         torch.tensor(4.0) / s7, torch.tensor(0.0)])
    assert bit_diff(q4, want4) == ""
    lin = torch.linspace(-1.5, 1.5, 20001)
    assert ops.quantize_weight(lin, 2).unique().numel() == 3
    assert ops.quantize_weight(lin, 4).unique().numel() == 15
    assert ops.quantize_activation(lin, 4).unique().numel() == 16
    assert bit_diff(ops.quantize_activation(torch.tensor([0.5, 0.51, -3.0, 7.0]), 1),
                    torch.tensor([0.0, 1.0, 0.0, 1.0])) == ""
    # Binary: +-mean|w| = 8.5 / 8.
    wb = torch.tensor([-2.0, -0.5, 0.0, -0.0, 0.5, 1.0, 3.0, -1.5])
    a = 1.0625
    assert bit_diff(ops.quantize_weight(wb, 1), torch.tensor([-a, -a, a, a, a, a, a, -a])) == ""

    for dtype in DTYPES:
        for bits in (1, 2, 3, 4, 8, 16):
            check_forward(make_input(1003 + bits, dtype, bits, binary=bits == 1), bits, True)
            check_forward(make_input(1003 + bits, dtype, 50 + bits), bits, False)
        x = make_input(37 * 53, dtype, 7).reshape(37, 53)
        check_forward(x.t(), 4, True)
        check_forward(x[:, ::3], 2, False)

    # NaN -> NaN with a zero gradient; +-inf clamp with a zero gradient, even for a NaN grad.
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.25], requires_grad=True)
    q = ops.quantize_activation(x, 4)
    assert math.isnan(q[0].item()) and q[1].item() == 1.0 and q[2].item() == 0.0
    q.backward(torch.full((4,), math.nan))
    assert bit_diff(x.grad[:3], torch.zeros(3)) == "" and math.isnan(x.grad[3].item())

    # Autograd: grad of sum is the mask; double backward through _masked_grad.
    w = torch.tensor([-2.0, -1.0, 0.3, 1.0, 1.5, math.nan], requires_grad=True)
    ops.quantize_weight(w, 4).sum().backward()
    assert bit_diff(w.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0])) == ""
    x = torch.linspace(-0.5, 1.5, 101, requires_grad=True)
    v = torch.randn(101, requires_grad=True)
    u = torch.randn(101)
    (gx,) = torch.autograd.grad(ops.quantize_activation(x, 2), x, v, create_graph=True)
    passing = activation_pass(x.detach())
    assert bit_diff(gx, torch.where(passing, v, torch.zeros_like(v))) == ""
    (gv,) = torch.autograd.grad(gx, v, u)
    assert bit_diff(gv, torch.where(passing, u, torch.zeros_like(u))) == ""
    # The input is not saved: an in-place change after the forward leaves the backward intact.
    w = torch.tensor([-2.0, 0.5, 0.9], requires_grad=True)
    q = ops.quantize_weight(w, 2)
    with torch.no_grad():
        w.mul_(10)
    q.sum().backward()
    assert bit_diff(w.grad, torch.tensor([0.0, 1.0, 1.0])) == ""
    # No-grad path: same values, no graph.
    x = make_input(500, torch.float32, 3).requires_grad_(True)
    with torch.no_grad():
        qn = ops.quantize_activation(x, 3)
    assert not qn.requires_grad
    assert bit_diff(qn, ops.quantize_activation(x, 3).detach()) == ""

    # Empty and meta tensors.
    for shape in [(0,), (4, 0)]:
        q, m = ops._quantize_weight_forward(torch.empty(shape), 2)
        assert q.shape == shape and m.shape == (0,)
    for shape, nbytes in [((5, 13), 9), ((8,), 1), ((9,), 2), ((0,), 0)]:
        for fwd in (ops._quantize_weight_forward, ops._quantize_activation_forward):
            q, m = fwd(torch.empty(shape, device="meta", dtype=torch.float16), 4)
            assert q.device.type == "meta" and q.shape == shape and q.dtype == torch.float16
            assert m.device.type == "meta" and m.shape == (nbytes,) and m.dtype == torch.uint8
        g = ops._masked_grad(torch.empty(shape, device="meta"),
                             torch.empty(nbytes, device="meta", dtype=torch.uint8))
        assert g.shape == shape

    # Errors name the argument and the allowed values.
    for dtype in (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64):
        z = torch.zeros(3, dtype=dtype)
        expect_error(lambda: ops.quantize_weight(z, 2), TypeError, ["argument 'w'", "floating-point"])
        expect_error(lambda: ops.quantize_activation(z, 2), TypeError,
                     ["argument 'x'", "floating-point"])
    for bits in (0, 17, -1, 32):
        f = torch.zeros(3)
        expect_error(lambda: ops.quantize_weight(f, bits), ValueError,
                     ["argument 'bits'", "[1, 16]", f"got {bits}"])
        expect_error(lambda: ops._quantize_activation_forward(f, bits), ValueError,
                     ["argument 'bits'", "[1, 16]"])
    expect_error(lambda: ops.quantize_weight(None, 2), RuntimeError, ["argument 'w'", "undefined"])
    g = torch.ones(20)
    expect_error(lambda: ops._masked_grad(g, torch.zeros(3)), TypeError, ["'mask'", "uint8"])
    expect_error(lambda: ops._masked_grad(g, torch.zeros(4, dtype=torch.uint8)), RuntimeError,
                 ["'mask'", "ceil(numel/8) = 3"])
    expect_error(lambda: ops._masked_grad(g, torch.zeros(3, dtype=torch.uint8, device="meta")),
                 RuntimeError, ["'mask' is on meta", "same device"])
    test_fixed_point("cpu")
    print("python ops: CPU checks passed")


def ref_fixed(x, total, frac, u=None):
    """spec.md: clamp(round(x * 2^f) / 2^f, -M, M), or floor(x * 2^f + u) when u is given."""
    s = 2.0 ** frac
    m = 2.0 ** (total - frac - 1) - 1.0 / s
    if u is None:
        v = (x.to(opmath(x.dtype)) * s).round()
    else:  # float64: x * 2^f + u exact
        v = (x.double() * s + u.double()).floor()
    return (v / s).clamp(-m, m).to(x.dtype)


def test_fixed_point(device):
    for dtype in DTYPES:
        x = (torch.randn(10007, dtype=torch.float64) * 3).to(dtype).to(device)
        for total, frac in ((2, 0), (4, 2), (8, 4), (16, 14)):
            q = ops.quantize_fixed_point(x, total, frac)
            assert bit_diff(q.cpu(), ref_fixed(x.cpu(), total, frac)) == "", (dtype, total, frac)
            # Stochastic: reproducible under a seed, and each value is a neighbour on the grid.
            g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
            a = ops.quantize_fixed_point(x, total, frac, True, g1)
            b = ops.quantize_fixed_point(x, total, frac, stochastic=True, generator=g2)
            assert bit_diff(a, b) == ""
            lo = ref_fixed(x.cpu(), total, frac, torch.zeros(x.shape))
            hi = ref_fixed(x.cpu(), total, frac, torch.full(x.shape, 0.999999940395))
            assert bool(((a.cpu() == lo) | (a.cpu() == hi)).all())
    # PyTorch's fake_quantize with scale 2^-f and symmetric integer bounds is the same quantizer,
    # apart from -0 (it gives +0) and NaN (it gives -M).
    x = torch.randn(100003, device=device) * 4
    for total, frac in ((4, 2), (8, 4), (16, 14)):
        q = ops.quantize_fixed_point(x, total, frac)
        qmax = 2 ** (total - 1) - 1
        r = torch.fake_quantize_per_tensor_affine(x, 2.0 ** -frac, 0, -qmax, qmax)
        assert torch.equal(q, r), (total, frac)
    w = torch.tensor([-3.0, -1.0, 0.3, 1.9, 5.0], device=device, requires_grad=True)
    ops.quantize_fixed_point(w, 4, 2).sum().backward()  # M = 1.75
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    expect_error(lambda: ops.quantize_fixed_point(w, 30, 4), ValueError, ["'total_bits'", "[2, 24]"])
    expect_error(lambda: ops.quantize_fixed_point(w, 8, 8), ValueError, ["'frac_bits'"])


def test_cuda():
    for dtype in DTYPES:
        for bits in (1, 2, 4, 16):
            for weight in (True, False):
                x = make_input(20003, dtype, bits, binary=weight and bits == 1)
                q_cpu, m_cpu = check_forward(x, bits, weight)
                q, m = check_forward(x.cuda(), bits, weight)
                assert q.is_cuda and m.is_cuda
                assert bit_diff(q, q_cpu) == "" and bit_diff(m, m_cpu) == ""
                xm = torch.cat([x[:1], x]).cuda()[1:]
                q_mis, m_mis = check_forward(xm, bits, weight)
                assert bit_diff(q_mis, q_cpu) == "" and bit_diff(m_mis, m_cpu) == ""
    g = torch.ones(20, device="cuda")
    expect_error(lambda: ops._masked_grad(g, torch.zeros(3, dtype=torch.uint8)), RuntimeError,
                 ["'mask' is on cpu", "same device"])
    test_fixed_point("cuda")
    x = torch.randn(4099) * 2
    a = ops.quantize_fixed_point(x.cuda(), 8, 4, True, torch.Generator().manual_seed(3))
    b = ops.quantize_fixed_point(x, 8, 4, True, torch.Generator().manual_seed(3))
    assert bit_diff(a.cpu(), b) == "", "stochastic rounding differs between CUDA and CPU"
    print("python ops: CUDA checks passed")


def test_opcheck(device):
    """torch.library.opcheck: schema, autograd registration, fake tensors and AOT dispatch with
    dynamic shapes (torch.compile / torch.export), for every public and internal op."""
    ops = torch.ops.wrpn

    def check(op, *args, skip=()):
        utils = [u for u in ("test_schema", "test_autograd_registration", "test_faketensor",
                             "test_aot_dispatch_dynamic") if u not in skip]
        torch.library.opcheck(op, args, test_utils=utils)

    for shape in ((3, 5), (2, 3, 4, 5), (7,)):
        for dtype in (torch.float32, torch.float64):
            x = torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)
            for bits in (1, 2, 4, 8):
                check(ops.quantize_weight.default, x, bits)
                check(ops.quantize_activation.default, x, bits)
                check(ops._quantize_weight_forward.default, x.detach(), bits)
                check(ops._quantize_activation_forward.default, x.detach(), bits)
            check(ops.quantize_fixed_point.default, x, 8, 4)
            check(ops.quantize_fixed_point.default, x, 16, 13, True)
            check(ops._quantize_fixed_point_forward.default, x.detach(), 8, 4)
            n = x.numel()
            check(ops._masked_grad.default, torch.randn(*shape, dtype=dtype, device=device),
                  torch.randint(0, 256, ((n + 7) // 8,), dtype=torch.uint8, device=device))
    # An explicit torch.Generator argument: AOTAutograd does not take Generator inputs of custom
    # ops (opcheck's AOT test fails inside PyTorch with "argument of type Generator"), so that
    # call is checked without it; torch.compile users pass no generator (the default one).
    x = torch.randn(4, 4, device=device, requires_grad=True)
    gen = torch.Generator(device=device).manual_seed(0)
    check(ops.quantize_fixed_point.default, x, 8, 4, True, gen, skip=("test_aot_dispatch_dynamic",))
    print(f"python ops: opcheck passed on {device}")


if __name__ == "__main__":
    # argv: libwrpn.so, then "cpu" or "cuda" (CTest runs them as two tests).
    part = sys.argv[2] if len(sys.argv) > 2 else "cpu"
    if part == "cpu":
        test_cpu()
        test_opcheck("cpu")
    elif torch.cuda.is_available():
        test_cuda()
        test_opcheck("cuda")
    else:
        print("WRPN_SKIP: no CUDA device, CUDA checks not run")
