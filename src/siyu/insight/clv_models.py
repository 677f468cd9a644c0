"""The CLV models of pymc-marketing, fitted by maximum likelihood.

The models are pymc-marketing's: ``BetaGeoModel`` (BG/NBD), ``ParetoNBDModel`` (Pareto/NBD)
and ``GammaGammaModel`` (spend per purchase), each built with flat priors
(``Prior("HalfFlat")``) so that the maximum a posteriori is the maximum likelihood
estimate of the published tables.

Why not ``model.fit(method="map")``: ``pm.find_MAP`` compiles the model's log-probability
for every fit, with the customers' data baked into the graph as constants. On 100,000
customers that compile (about a second when warm, much more cold) costs more than the
optimisation itself, and a nightly run fits twice. So each model's log-probability is
taken from a pymc-marketing model built once on a three-row template, its data constants
are swapped for symbolic inputs, a per-row weight is added, and the result is compiled
once per process (log-probability and gradient in one function). ``scipy.optimize``
(BFGS, in the models' own log-transformed parameter space, as ``find_MAP`` does) then
maximises it for any data without compiling again. The weight lets identical summaries
share one row: customers with the same (frequency, recency, T) have the same likelihood,
and on day-level data most of a brand's members share theirs with many others.

Predictions (P(alive), expected purchases, expected spend) are pymc-marketing's own
methods on a model object that carries the fitted parameters.

pymc and pytensor are imported here only: the app and the CLI import this module lazily.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from siyu.core.errors import SiyuError

PURCHASE_MODELS = ("bgnbd", "pareto")
PURCHASE_PARAMS: dict[str, tuple[str, ...]] = {
    "bgnbd": ("r", "alpha", "a", "b"),
    "pareto": ("r", "alpha", "s", "beta"),
}
SPEND_PARAMS = ("p", "q", "v")  # v is the γ of Fader & Hardie's note

# Distinct values, so each data constant of the template graph is recognised by its content.
_TEMPLATE = pd.DataFrame(
    {
        "customer_id": [0, 1, 2],
        "frequency": [1.0, 3.0, 5.0],
        "recency": [0.5, 7.5, 11.25],
        "T": [13.0, 17.0, 19.0],
        "monetary_value": [12.125, 21.5, 33.75],
    }
)


class FitFailed(SiyuError):
    status = 422
    code = "clv_fit_failed"


def _pymc_model(kind: str, data: pd.DataFrame | None = None) -> Any:
    """A pymc-marketing model object with flat priors, built on ``data`` (the template by
    default)."""
    from pymc_extras.prior import Prior
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel, ParetoNBDModel

    data = _TEMPLATE if data is None else data
    if kind == "spend":
        model = GammaGammaModel(model_config={k: Prior("HalfFlat") for k in SPEND_PARAMS})
        model.build_model(data[["customer_id", "frequency", "monetary_value"]])
    else:
        cls = BetaGeoModel if kind == "bgnbd" else ParetoNBDModel
        model = cls(model_config={k: Prior("HalfFlat") for k in PURCHASE_PARAMS[kind]})
        model.build_model(data[["customer_id", "frequency", "recency", "T"]])
    return model


@dataclass
class _Compiled:
    """One model's weighted log-likelihood and gradient, compiled with data as inputs."""

    names: tuple[str, ...]  # the value variables, in the log-transformed space
    data_columns: tuple[str, ...]
    fn: Callable[..., list[np.ndarray]]


_compiled: dict[str, _Compiled] = {}
_lock = threading.Lock()


def _data_inputs(kind: str) -> dict[str, np.ndarray]:
    """The template's data as the model holds it, by the name of the input replacing it."""
    t = _TEMPLATE
    if kind == "spend":
        return {
            "monetary_value": t["monetary_value"].to_numpy(float),
            "frequency": t["frequency"].to_numpy(float),
        }
    return {
        "observed": np.stack((t["recency"].to_numpy(float), t["frequency"].to_numpy(float)), 1),
        "T": t["T"].to_numpy(float),
    }


def _compile(kind: str) -> _Compiled:
    import pytensor
    import pytensor.tensor as pt
    from pytensor.graph.basic import Constant, ancestors, graph_inputs, io_toposort

    model = _pymc_model(kind).model
    # BG/NBD and Pareto/NBD: the observed variable; Gamma-Gamma: its likelihood potential
    terms = model.potentials if kind == "spend" else model.observed_RVs
    (term,) = model.logp(vars=terms, jacobian=False, sum=False)
    wanted = _data_inputs(kind)
    symbols = {name: pt.tensor(name, shape=(None,) * v.ndim) for name, v in wanted.items()}
    replace: dict[Any, Any] = {}
    for var in ancestors([term]):
        if not isinstance(var, Constant) or getattr(var.type, "ndim", 0) < 1:
            continue
        value = np.asarray(var.data)
        for name, expected in wanted.items():
            if value.shape == expected.shape and np.allclose(value.astype(float), expected):
                replace[var] = symbols[name].astype(var.dtype)
    if len(replace) != len(wanted):
        raise RuntimeError(f"the {kind} model's data constants were not all found in its graph")
    # Rebuild every node over the symbolic inputs, letting each infer its shape anew (a
    # plain graph replace would pin the template's length of three).
    memo: dict[Any, Any] = dict(replace)
    for node in io_toposort(list(graph_inputs([term])), [term]):
        inputs = [memo.get(i, i) for i in node.inputs]
        if all(a is b for a, b in zip(inputs, node.inputs, strict=True)):
            continue
        rebuilt = node.clone_with_new_inputs(inputs, strict=False)
        memo.update(zip(node.outputs, rebuilt.outputs, strict=True))
    weight = pt.vector("weight")
    total = pt.sum(weight * memo[term])
    values = list(model.value_vars)
    if not all(v.name.endswith("_log__") for v in values):  # HalfFlat is log-transformed
        raise RuntimeError(f"unexpected parameters of the {kind} model: {values}")
    grads = pt.grad(total, values)
    fn = pytensor.function([*symbols.values(), weight, *values], [total, *grads])
    return _Compiled(tuple(v.name for v in values), tuple(symbols), fn)


def compiled(kind: str) -> _Compiled:
    """The compiled likelihood of a model, built on first use (pytensor compiles C then,
    and caches it on disk for the next process)."""
    with _lock:
        if kind not in _compiled:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pymc-marketing's deprecation notes
                _compiled[kind] = _compile(kind)
        return _compiled[kind]


@dataclass(frozen=True)
class Estimate:
    params: dict[str, float]
    log_likelihood: float
    evaluations: int


def maximise(kind: str, data: dict[str, np.ndarray], weight: np.ndarray) -> Estimate:
    """Maximum likelihood of one model on weighted rows (``data`` as ``_data_inputs``)."""
    from scipy.optimize import minimize

    model = compiled(kind)
    arrays = [np.ascontiguousarray(data[name], dtype=float) for name in model.data_columns]
    w = np.ascontiguousarray(weight, dtype=float)
    scale = float(w.sum()) or 1.0  # per-customer scale keeps BFGS's tolerance meaningful

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        total, *grads = model.fn(*arrays, w, *(np.asarray(v) for v in x))
        value = float(total)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(x)
        return -value / scale, -np.array([float(g) for g in grads]) / scale

    result = minimize(
        objective,
        np.zeros(len(model.names)),
        jac=True,
        method="BFGS",
        options={"maxiter": 1000, "gtol": 1e-9},
    )
    if not np.all(np.isfinite(result.x)) or result.fun >= 1e299:
        raise FitFailed(
            f"the {kind} model did not converge on this data ({result.message}); "
            "check that the summary has repeat buyers and a calibration period long enough"
        )
    # value variables are named like "r_log__": the models' log transform of a HalfFlat
    params = {
        name.removesuffix("_log__"): float(np.exp(v))
        for name, v in zip(model.names, result.x, strict=True)
    }
    return Estimate(params, float(-result.fun * scale), int(result.nfev))


def purchase_rows(summary: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Distinct (frequency, recency, T) with their counts: the purchase models' data."""
    if "weight" in summary:
        grouped = summary
    else:
        grouped = summary.groupby(["frequency", "recency", "T"], sort=False).size()
        grouped = grouped.reset_index(name="weight")
    observed = np.stack(
        (grouped["recency"].to_numpy(float), grouped["frequency"].to_numpy(float)), 1
    )
    return {"observed": observed, "T": grouped["T"].to_numpy(float)}, grouped["weight"].to_numpy(
        float
    )


def spend_rows(summary: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Repeat buyers' (frequency, mean repeat spend) with counts: the spend model's data."""
    repeat = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    if "weight" in repeat:
        grouped = repeat
    else:
        grouped = repeat.groupby(["frequency", "monetary_value"], sort=False).size()
        grouped = grouped.reset_index(name="weight")
    return (
        {
            "monetary_value": grouped["monetary_value"].to_numpy(float),
            "frequency": grouped["frequency"].to_numpy(float),
        },
        grouped["weight"].to_numpy(float),
    )


class Predictor:
    """pymc-marketing model objects carrying fitted parameters, for their predictions."""

    def __init__(self, kind: str, purchase: dict[str, float], spend: dict[str, float] | None):
        import arviz as az

        self.kind = kind
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.purchase = _pymc_model(kind)
            self.purchase.idata = az.from_dict(
                posterior={k: np.array([[v]]) for k, v in purchase.items()}
            )
            self.spend = None
            if spend is not None:
                self.spend = _pymc_model("spend")
                self.spend.idata = az.from_dict(
                    posterior={k: np.array([[v]]) for k, v in spend.items()}
                )
        self.purchase_params = dict(purchase)
        self.spend_params = dict(spend) if spend is not None else None

    @staticmethod
    def _values(result: Any) -> np.ndarray:
        return np.asarray(result.values).reshape(-1)

    # BG/NBD and Gamma-Gamma predictions are closed forms (Fader, Hardie & Lee 2005,
    # equations 10 and 11; Fader, Hardie & Lee 2005b for the spend): evaluated with NumPy
    # they score 100k customers several times faster than pymc-marketing's xarray path,
    # which stays the reference (``reference_*``; a test holds the two equal). Pareto/NBD
    # keeps pymc-marketing's own predictions.

    def p_alive(self, data: pd.DataFrame) -> np.ndarray:
        if self.kind != "bgnbd":
            return self.reference_p_alive(data)
        r, alpha, a, b = (self.purchase_params[k] for k in ("r", "alpha", "a", "b"))
        x, t_x, t = _purchase_arrays(data)
        log_ratio = (r + x) * np.log((alpha + t) / (alpha + t_x))
        odds = a / (b + np.maximum(x, 1) - 1) * np.exp(log_ratio)
        return np.where(x == 0, 1.0, 1.0 / (1.0 + odds))

    def expected_purchases(self, data: pd.DataFrame, units: float) -> np.ndarray:
        if self.kind != "bgnbd":
            return self.reference_expected_purchases(data, units)
        from scipy.special import hyp2f1

        r, alpha, a, b = (self.purchase_params[k] for k in ("r", "alpha", "a", "b"))
        x, t_x, t = _purchase_arrays(data)
        horizon = float(units)
        ahead = (alpha + t) / (alpha + t + horizon)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, horizon / (alpha + t + horizon))
        numerator = (a + b + x - 1) / (a - 1) * (1 - ahead ** (r + x) * hyp)
        odds = (x > 0) * a / (b + np.maximum(x, 1) - 1) * ((alpha + t) / (alpha + t_x)) ** (r + x)
        return numerator / (1 + odds)

    def expected_spend(self, data: pd.DataFrame) -> np.ndarray:
        if self.spend_params is None:
            return np.full(len(data), np.nan)
        p, q, v = (self.spend_params[k] for k in ("p", "q", "v"))
        x = data["frequency"].to_numpy(float)
        m = data["monetary_value"].to_numpy(float)
        weight = p * x / (p * x + q - 1)
        return (1 - weight) * (v * p / (q - 1)) + weight * m

    def reference_p_alive(self, data: pd.DataFrame) -> np.ndarray:
        return self._values(self.purchase.expected_probability_alive(data))

    def reference_expected_purchases(self, data: pd.DataFrame, units: float) -> np.ndarray:
        return self._values(self.purchase.expected_purchases(data, future_t=units))

    def reference_expected_spend(self, data: pd.DataFrame) -> np.ndarray:
        if self.spend is None:
            return np.full(len(data), np.nan)
        return self._values(self.spend.expected_customer_spend(data))


def _purchase_arrays(data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        data["frequency"].to_numpy(float),
        data["recency"].to_numpy(float),
        data["T"].to_numpy(float),
    )


def frame(
    customer_id: Sequence[Any] | np.ndarray,
    frequency: np.ndarray,
    recency: np.ndarray,
    t: np.ndarray,
    monetary_value: np.ndarray,
) -> pd.DataFrame:
    """A summary frame in pymc-marketing's column names."""
    return pd.DataFrame(
        {
            "customer_id": np.asarray(customer_id),
            "frequency": np.asarray(frequency, dtype=float),
            "recency": np.asarray(recency, dtype=float),
            "T": np.asarray(t, dtype=float),
            "monetary_value": np.asarray(monetary_value, dtype=float),
        }
    )
