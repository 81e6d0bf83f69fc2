"""Which ops of a Dynamo graph behave how, as far as token layouts are concerned.

Op names are those of :func:`asymrnr_compile.analysis.fx_nodes.op_name`. The sets are shared by
the layout propagation (:mod:`.propagate_layout`) and the check that a sub-graph treats every
token on its own (:mod:`.projection_paths`).
"""

from __future__ import annotations

#: Elementwise ops and ops that act on each element or each position independently; their
#: tensor inputs broadcast against each other.
ELEMENTWISE: frozenset[str] = frozenset(
    {
        # arithmetic (operator.* and torch.*; in-place and reflected variants)
        "add", "sub", "mul", "truediv", "div", "floordiv", "floor_divide", "mod", "remainder",
        "pow", "neg", "pos", "abs", "iadd", "isub", "imul", "itruediv", "idiv", "ipow",
        "add_", "sub_", "mul_", "div_", "radd", "rsub", "rmul", "rtruediv", "true_divide",
        "addcmul", "addcdiv", "lerp", "square", "reciprocal", "sqrt", "rsqrt", "exp", "exp2",
        "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "tanh", "sinh", "cosh",
        "asin", "acos", "atan", "atan2", "erf", "erfc", "sign", "sgn", "floor", "ceil", "round",
        "trunc", "frac", "clamp", "clamp_min", "clamp_max", "clip", "maximum", "minimum",
        "fmax", "fmin", "where", "masked_fill", "masked_fill_", "nan_to_num", "copysign",
        "hypot",
        # comparisons and logic
        "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "invert", "logical_and",
        "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
        "isnan", "isinf", "isfinite",
        # activations
        "relu", "relu_", "gelu", "silu", "sigmoid", "softplus", "mish", "elu", "selu", "celu",
        "leaky_relu", "hardswish", "hardsigmoid", "hardtanh", "relu6", "glu_elementwise",
        "identity", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
        # casts, copies, likes
        "to", "float", "half", "bfloat16", "double", "int", "long", "bool", "type", "type_as",
        "contiguous", "clone", "detach", "copy_", "requires_grad_", "cpu", "cuda",
        "ones_like", "zeros_like", "full_like", "empty_like", "rand_like", "randn_like",
        "_get_data_attr",
    }
)

#: Elementwise ops whose further tensor arguments give only a dtype, device or template
#: (``x.to(other)``, ``x.type_as(other)``): the output's layout is the first input's.
FIRST_INPUT_ONLY: frozenset[str] = frozenset(
    {
        "to", "type", "type_as", "float", "half", "bfloat16", "double", "int", "long", "bool",
        "contiguous", "clone", "detach", "requires_grad_", "cpu", "cuda", "ones_like",
        "zeros_like", "full_like", "empty_like", "rand_like", "randn_like", "_get_data_attr",
    }
)

#: Normalisations over trailing dims (``normalized_shape``): token-wise unless the token axis
#: is among the normalised dims.
TRAILING_NORMS: frozenset[str] = frozenset({"layer_norm", "rms_norm"})

#: Ops with a ``dim`` argument that mix values along that dim only.
ALONG_DIM: frozenset[str] = frozenset(
    {"softmax", "log_softmax", "normalize", "cumsum", "cumprod", "logcumsumexp"}
)

#: Reductions: ``(input, dim=None, keepdim=False)``.
REDUCTIONS: frozenset[str] = frozenset(
    {
        "mean", "sum", "nansum", "prod", "amax", "amin", "max", "min", "std", "var",
        "logsumexp", "any", "all", "argmax", "argmin", "count_nonzero", "median", "nanmean",
    }
)

#: Ops whose output is the input regrouped (same elements, new shape).
RESHAPES: frozenset[str] = frozenset(
    {"view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "squeeze",
     "unsqueeze", "_unsafe_view"}
)

#: Ops that reorder dims.
PERMUTES: frozenset[str] = frozenset(
    {"permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t"}
)

#: Ops that split a tensor along one dim into a tuple.
SPLITS: frozenset[str] = frozenset(
    {"split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "unbind"}
)

#: Ops that broadcast an input to a larger shape.
EXPANDS: frozenset[str] = frozenset({"expand", "expand_as", "broadcast_to"})

#: Linear projections (``x @ W.T + b`` on the last dim).
LINEARS: frozenset[str] = frozenset({"linear"})

#: Concatenations along an existing dim.
CATS: frozenset[str] = frozenset({"cat", "concat", "concatenate"})

#: Ops that move values along a dim (the token order on it is lost).
REORDERS_ALONG_DIM: frozenset[str] = frozenset(
    {"flip", "roll", "sort", "argsort", "topk", "cummax", "cummin", "fliplr", "flipud"}
)

#: Functions that write into their first argument (methods ending in ``_`` do too).
IN_PLACE: frozenset[str] = frozenset(
    {"setitem", "copy_", "iadd", "isub", "imul", "itruediv", "idiv", "ipow", "index_put_"}
)
