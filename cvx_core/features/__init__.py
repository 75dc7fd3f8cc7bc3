"""The feature room: the SPEC's constants (``config``), the analytic NumPy path (``analytic``),
the differentiable torch path (``differentiable``, one fused autograd Function) and its
learnable parts (``learnable``). It may import ``cvx_core.data`` (for types) and nothing above.
"""
