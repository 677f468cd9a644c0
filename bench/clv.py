"""CLV benchmark: siyu's pymc-marketing fit against lifetimes on the same summary.

    python bench/clv.py                      # 100,000 customers
    python bench/clv.py --customers 20000 --repeat 3

One run:

1. simulates a summary of ``--customers`` customers from known BG/NBD and Gamma-Gamma
   parameters (the published CDNOW ones: r=0.243, alpha=4.414, a=0.793, b=2.426; p=6.25,
   q=3.74, gamma=15.44), at day resolution as real order data is (first purchase in the
   first 12 weeks of a 39-week period, purchases on whole days, time in weeks);
2. fits and scores it with siyu (``siyu.insight.clv``: pymc-marketing's BetaGeoModel and
   GammaGammaModel with flat priors, their log-likelihood compiled once and maximised by
   scipy; predictions by pymc-marketing's methods): the first fit in the process, which
   compiles the models, then ``--repeat`` warm fits;
3. fits and scores the same summary with lifetimes' BetaGeoFitter and GammaGammaFitter
   (penalizer 0, so both are plain maximum likelihood);
4. for reference, times pymc-marketing's own ``fit(method="map")`` (``pm.find_MAP``) on
   the same data (``--no-find-map`` skips it);
5. prints the times, the ratio lifetimes / siyu (goal >= 5), and whether the parameters
   agree to three decimals.

"Score" is, per customer, P(alive), expected purchases (siyu: over 90 and 365 days;
lifetimes: over 52 weeks) and expected spend (siyu also multiplies them into a value).
lifetimes is imported here only: siyu never imports it.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

TRUE = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426, "p": 6.25, "q": 3.74, "v": 15.44}


def simulate(customers: int, seed: int = 42) -> pd.DataFrame:
    """A BG/NBD + Gamma-Gamma population observed for 39 weeks, summarised by day."""
    rng = np.random.default_rng(seed)
    period = 273  # days
    first = rng.integers(0, 84, customers)
    horizon = (period - first).astype(float)  # days from the first purchase to the end
    rate = rng.gamma(TRUE["r"], 1 / TRUE["alpha"], customers) / 7  # purchases per day
    drop = rng.beta(TRUE["a"], TRUE["b"], customers)
    t = np.zeros(customers)
    last_day = np.zeros(customers)
    count = np.zeros(customers, dtype=int)
    alive = np.ones(customers, dtype=bool)  # BG/NBD: no drop-out before a repeat purchase
    while alive.any():
        t = t + rng.exponential(1 / np.maximum(rate, 1e-12))
        buy = alive & (t < horizon)
        day = np.floor(t)
        new_day = buy & (day > last_day)  # purchases on one day count once
        count[new_day] += 1
        last_day = np.where(new_day, day, last_day)
        alive = buy & (rng.random(customers) >= drop)
    nu = rng.gamma(TRUE["q"], 1 / TRUE["v"], customers)
    spend_sum = rng.gamma(np.maximum(TRUE["p"] * count, 1e-9), 1 / nu)
    monetary = np.where(count > 0, np.round(spend_sum / np.maximum(count, 1), 2), 0.0)
    return pd.DataFrame(
        {
            "customer_id": np.arange(customers),
            "frequency": count.astype(float),
            "recency": last_day / 7,
            "T": (horizon - 1) / 7,  # the last observed day is the period's last day
            "monetary_value": monetary,
        }
    )


def ours(summary: pd.DataFrame) -> tuple[dict[str, float], float, float]:
    from siyu.insight import clv

    started = time.perf_counter()
    fitted = clv.fit(summary)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    fitted.score(summary)  # P(alive), purchases in 90 and 365 days, spend, value
    score_s = time.perf_counter() - started
    assert fitted.spend is not None
    return {**fitted.purchase, **fitted.spend}, fit_s, score_s


def theirs(summary: pd.DataFrame) -> tuple[dict[str, float], float, float]:
    from lifetimes import BetaGeoFitter, GammaGammaFitter

    repeat = summary[summary["frequency"] > 0]
    started = time.perf_counter()
    bgf = BetaGeoFitter(penalizer_coef=0.0).fit(
        summary["frequency"], summary["recency"], summary["T"]
    )
    ggf = GammaGammaFitter(penalizer_coef=0.0).fit(repeat["frequency"], repeat["monetary_value"])
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    bgf.conditional_probability_alive(summary["frequency"], summary["recency"], summary["T"])
    bgf.conditional_expected_number_of_purchases_up_to_time(
        52, summary["frequency"], summary["recency"], summary["T"]
    )
    ggf.conditional_expected_average_profit(summary["frequency"], summary["monetary_value"])
    score_s = time.perf_counter() - started
    params = dict(bgf.params_) | dict(ggf.params_)
    return {k: float(v) for k, v in params.items()}, fit_s, score_s


def find_map(summary: pd.DataFrame) -> float:
    from pymc_extras.prior import Prior
    from pymc_marketing.clv import BetaGeoModel, GammaGammaModel

    repeat = summary[summary["frequency"] > 0]
    started = time.perf_counter()
    bg = BetaGeoModel(model_config={k: Prior("HalfFlat") for k in ("r", "alpha", "a", "b")})
    bg.fit(summary[["customer_id", "frequency", "recency", "T"]], method="map", progressbar=False)
    gg = GammaGammaModel()
    gg.fit(repeat[["customer_id", "frequency", "monetary_value"]], method="map", progressbar=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="warm fits to average")
    parser.add_argument("--no-find-map", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    summary = simulate(args.customers)
    distinct = len(summary.groupby(["frequency", "recency", "T"]).size())
    print(
        f"summary: {len(summary):,} customers, {int((summary.frequency > 0).sum()):,} repeat "
        f"buyers, {distinct:,} distinct (frequency, recency, T)"
    )

    started = time.perf_counter()
    import siyu.insight.clv_models  # noqa: F401  (imports pymc, pytensor, pymc-marketing)

    print(f"import pymc-marketing: {time.perf_counter() - started:.2f} s")
    _, cold_fit, cold_score = ours(summary)
    print(f"siyu first fit (compiles the models): fit {cold_fit:.3f} s, score {cold_score:.3f} s")
    runs = [ours(summary) for _ in range(max(1, args.repeat))]
    params = runs[-1][0]
    fit_s = float(np.mean([r[1] for r in runs]))
    score_s = float(np.mean([r[2] for r in runs]))
    print(f"siyu warm fit: fit {fit_s:.3f} s, score {score_s:.3f} s (mean of {len(runs)})")

    ref_params, ref_fit, ref_score = theirs(summary)
    print(f"lifetimes: fit {ref_fit:.3f} s, score {ref_score:.3f} s")
    if not args.no_find_map:
        print(f"pymc-marketing fit(method='map') (find_MAP): {find_map(summary):.3f} s")

    print()
    print(f"{'param':<6} {'true':>8} {'siyu':>10} {'lifetimes':>10}  same to 3 decimals")
    agree = True
    for name in ("r", "alpha", "a", "b", "p", "q", "v"):
        same = round(params[name], 3) == round(ref_params[name], 3)
        agree &= same
        print(
            f"{name:<6} {TRUE[name]:>8.3f} {params[name]:>10.4f} {ref_params[name]:>10.4f}  "
            f"{'yes' if same else 'NO'}"
        )
    total, ref_total = fit_s + score_s, ref_fit + ref_score
    print()
    print(
        f"fit + score: siyu {total:.3f} s (warm), {cold_fit + cold_score:.3f} s (first fit), "
        f"lifetimes {ref_total:.3f} s"
    )
    print(f"ratio lifetimes / siyu (warm): {ref_total / total:.1f}x (goal >= 5x)")
    print(f"ratio lifetimes / siyu (first fit): {ref_total / (cold_fit + cold_score):.1f}x")
    print(f"parameters agree to 3 decimals: {'yes' if agree else 'no'}")


if __name__ == "__main__":
    main()
