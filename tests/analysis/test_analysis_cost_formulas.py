"""One home per FLOP formula (asymrnr_compile/ops/flops.py): the sympy cost models are those
functions called with symbols, and they equal the formulas the package typed out before.

The ``_typed_*`` functions below are the earlier hand-typed forms, kept here only to pin that
the merge changed no number."""

from __future__ import annotations

import sympy
from hypothesis import given
from hypothesis import strategies as st

from asymrnr_compile.analysis import cost
from asymrnr_compile.analysis import parallel_cost as pc
from asymrnr_compile.analysis.cost import ATTENTION_EXPR, MATCHING_EXPR, SYMBOLS, SiteCostModel, ideal_speedup
from asymrnr_compile.ops.flops import (
    FLOPS_PER_MAC,
    attention_flops,
    linear_flops,
    matching_flops,
    matmul_flops,
    projected_matching_flops,
    projection_saves_flops,
)

MAX_SIZE = 5000
sizes = st.integers(1, MAX_SIZE)
indicators = st.integers(0, 1)


def _symbols(names: str) -> list[sympy.Symbol]:
    return [SYMBOLS[name] for name in names.split()]


# ---- ops.flops: one function for ints and for sympy ----

@given(leading=sizes, q=sizes, kv=sizes, d=sizes, dv=st.none() | sizes)
def test_attention_flops_on_symbols_evaluates_to_the_integer_count(leading, q, kv, d, dv):
    p, lq, lk, hd, vd = sympy.symbols("p l_q l_k d d_v", positive=True, integer=True)
    expr = attention_flops(p, lq, lk, hd, None if dv is None else vd)
    values = {p: leading, lq: q, lk: kv, hd: d, vd: d if dv is None else dv}
    assert expr.subs(values) == attention_flops(leading, q, kv, d, dv)
    assert attention_flops(leading, q, kv, d, dv) == FLOPS_PER_MAC * leading * q * kv * (d + (d if dv is None else dv))


@given(leading=sizes, n=st.integers(2, MAX_SIZE), data=st.data(), c=sizes, k=sizes)
def test_matching_formulas_on_symbols_evaluate_to_the_integer_counts(leading, n, data, c, k):
    num_dst = data.draw(st.integers(1, n - 1))
    p, tokens, dst, ch, dims = sympy.symbols("p N N_dst c k", positive=True, integer=True)
    values = {p: leading, tokens: n, dst: num_dst, ch: c, dims: k}
    assert matching_flops(p, tokens - dst, dst, ch).subs(values) == matching_flops(leading, n - num_dst, num_dst, c)
    assert (projected_matching_flops(p, tokens, dst, ch, dims).subs(values)
            == projected_matching_flops(leading, n, num_dst, c, k))
    assert matching_flops(leading, n - num_dst, num_dst, c) == FLOPS_PER_MAC * leading * (n - num_dst) * num_dst * c


@given(rows=sizes, c_in=sizes, c_out=sizes)
def test_linear_flops_is_one_matmul(rows, c_in, c_out):
    assert linear_flops(rows, c_in, c_out) == matmul_flops(rows * c_out, c_in) == FLOPS_PER_MAC * rows * c_in * c_out


@given(n=st.integers(2, MAX_SIZE), data=st.data(), c=sizes, k=sizes)
def test_projection_saves_flops_is_the_matchers_earlier_rule(n, data, c, k):
    num_dst = data.draw(st.integers(1, n - 1))
    num_src = n - num_dst
    typed = n * c * k + num_src * num_dst * k < num_src * num_dst * c  # ops/match.py before
    assert projection_saves_flops(n, num_dst, c, k) == typed


# ---- analysis/cost.py: the site expressions are the same sympy objects as before ----

def _typed_attention_expr() -> sympy.Expr:
    b, h, d, dv, tq, tk, kq, kkv = _symbols("B H d d_v T_q T_k K_q K_kv")
    return FLOPS_PER_MAC * b * h * (tq + kq) * (tk + kkv) * (d + dv)


def _typed_matching_expr() -> sympy.Expr:
    b, h, d, dv, n, ndst, w, mq, mkv, mh, bh, ch = _symbols("B H d d_v N N_dst W m_q m_kv m_h B_h C_h")
    return (FLOPS_PER_MAC * (n - ndst) * ndst * (mq * b * h * d + mkv * b * h * dv + mh * bh * ch)) / w


def test_site_expressions_are_the_typed_ones_to_the_structure():
    # Structurally equal, not only mathematically: SiteCostModel lambdifies them, and the same
    # tree gives the same float arithmetic, so every cost the package reports is unchanged.
    assert sympy.srepr(ATTENTION_EXPR) == sympy.srepr(_typed_attention_expr())
    assert sympy.srepr(MATCHING_EXPR) == sympy.srepr(_typed_matching_expr())


@given(b=sizes, d=sizes, dv=sizes, tq=sizes, tk=sizes, kq=sizes, kkv=sizes, n=st.integers(2, MAX_SIZE),
       data=st.data(), w=sizes, mq=indicators, mkv=indicators, mh=indicators, bh=sizes, ch=sizes)
def test_site_expressions_evaluate_to_the_integer_functions(b, d, dv, tq, tk, kq, kkv, n, data, w, mq, mkv, mh,
                                                          bh, ch):
    ndst = data.draw(st.integers(1, n - 1))
    values = dict(zip(_symbols("B H d d_v T_q T_k K_q K_kv N N_dst W m_q m_kv m_h B_h C_h"),
                      (b, 1, d, dv, tq, tk, kq, kkv, n, ndst, w, mq, mkv, mh, bh, ch), strict=True))
    assert ATTENTION_EXPR.subs(values) == attention_flops(b, tq + kq, tk + kkv, d, dv)
    matchings = (mq * matching_flops(b, n - ndst, ndst, d) + mkv * matching_flops(b, n - ndst, ndst, dv)
                 + mh * matching_flops(bh, n - ndst, ndst, ch))
    assert MATCHING_EXPR.subs(values) == sympy.Rational(matchings, w)


@given(n=st.integers(2, 4096), data=st.data(), leading=sizes, channels=sizes, dims=sizes,
       feature=st.sampled_from(["q", "kv", "h"]))
def test_projected_matching_of_a_site_is_the_typed_formula(n, data, leading, channels, dims, feature):
    num_dst = data.draw(st.integers(1, n - 1))
    values = {cost.B: leading, cost.H: 1, cost.D: channels, cost.DV: channels, cost.TQ: 0, cost.TK: 0,
              cost.N: n, cost.PH: 0, cost.LH: n, cost.BH: leading, cost.CH: channels}
    model = SiteCostModel(0, n, values)
    exact = FLOPS_PER_MAC * leading * (n - num_dst) * num_dst * channels
    typed = FLOPS_PER_MAC * leading * n * channels * dims + FLOPS_PER_MAC * leading * (n - num_dst) * num_dst * dims
    saves = n * channels * dims + (n - num_dst) * num_dst * dims < (n - num_dst) * num_dst * channels
    assert model.projected_matching_flops(feature, num_dst, dims) == float(typed if saves else exact)


@given(full=st.floats(0, 1e18), reduced=st.floats(0, 1e18))
def test_ideal_speedup_is_full_over_reduced(full, reduced):
    assert ideal_speedup(full, reduced) == (full / reduced if reduced else 1.0)
    assert cost.CostEstimate(1, reduced, 0).ideal_speedup == ideal_speedup(1, reduced)


# ---- analysis/parallel_cost.py: built from the same functions, equal to the typed forms ----

def _typed_parallel(scheme: str) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """(attention, matching, other) as parallel_cost.py typed them before."""
    b, h, d, c, cff, layers, n, t, kq, kkv, ndst, w, p, cout, tx = (
        pc.PARALLEL_SYMBOLS[name] for name in "B H d C C_ff layers N T K_q K_kv N_dst W P C_out T_x".split())
    if scheme == "ulysses":
        attention = FLOPS_PER_MAC * b * (h / p) * (t + kq) * (t + kkv) * 2 * d
        matching = FLOPS_PER_MAC * (n - ndst) * ndst * b * (h / p) * 2 * d
    else:
        attention = FLOPS_PER_MAC * b * h * ((t + kq) / p) * (t + kkv) * 2 * d
        matching = FLOPS_PER_MAC * ((n - ndst) * ndst / p**2) * b * h * 2 * d
    attention = layers * (attention + FLOPS_PER_MAC * b * h * (n / p) * tx * 2 * d)
    cross = sympy.Piecewise((2 * c * c * n / p + 2 * c * c * tx, tx > 0), (0, True))
    projections_and_mlp = (n + t) / p * (4 * c * c + 2 * c * cff)
    other = FLOPS_PER_MAC * b * (layers * projections_and_mlp + layers * cross + (n / p) * c * cout)
    return attention, layers * matching / w, other


@given(scheme=st.sampled_from(["ulysses", "ring"]), b=sizes, h=sizes, d=sizes, c=sizes, cff=sizes,
       layers=st.integers(1, 64), n=st.integers(2, MAX_SIZE), t=st.integers(0, MAX_SIZE), data=st.data(),
       w=st.integers(1, 10), p=st.integers(1, 16), cout=sizes, tx=st.integers(0, MAX_SIZE))
def test_parallel_expressions_equal_the_typed_forms(scheme, b, h, d, c, cff, layers, n, t, data, w, p, cout, tx):
    ndst = data.draw(st.integers(1, n - 1))
    kq, kkv = data.draw(st.integers(1, n)), data.draw(st.integers(1, n))
    symbols = pc.PARALLEL_SYMBOLS
    values = {symbols[name]: value for name, value in zip(
        "B H d C C_ff layers N T K_q K_kv N_dst W P C_out T_x".split(),
        (b, h, d, c, cff, layers, n, t, kq, kkv, ndst, w, p, cout, tx), strict=True)}
    attention, matching, other = _typed_parallel(scheme)
    # subs of integers is exact (rationals): equal here is equal to the last bit of step_cost's float
    assert pc.attention_flops_expr(scheme).subs(values) == attention.subs(values)
    assert pc.matching_flops_expr(scheme).subs(values) == matching.subs(values)
    assert pc.other_flops_expr().subs(values) == other.subs(values)
