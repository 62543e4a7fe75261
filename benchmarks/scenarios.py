"""Labelled scenarios for the detector quality report: traffic where the truth is known.

A detector suite is only as credible as its measured detection delay and false-alarm rate
on traffic whose ground truth is known. Every generator here returns a :class:`Scenario`:
a benign *reference* (what the golden baseline is built from), the *stream* as
time-ordered :class:`~detectors.block.EventBlock` s, and the truth: the global event index
and event time where the attack or drift starts, the attacker's client ids, and which
detector should fire. :mod:`benchmarks.quality` runs them through the detection core.

How the traffic is made, and why:

- **Inputs** come from datasets shipped with scikit-learn (breast cancer, wine, digits,
  diabetes) or from river's synthetic stream generators. Real rows are drawn by a
  *smoothed bootstrap*: a resampled row plus Gaussian noise shaped by its class's
  covariance (a Gaussian KDE with Silverman's bandwidth). Plain resampling would make
  every benign client repeat rows exactly, which is precisely what near-duplicate and
  PRADA-style extraction detectors look for; the KDE keeps the data's shape without that
  artefact. Values are clipped to the dataset's observed range.
- **Scores** come from a fixed model fitted once on the dataset (scaled logistic
  regression, ``predict_proba``), so confidence, entropy and margin behave like a real
  model's, including under drift and noise.
- **Event time**: each client sends a Poisson stream at its own rate; rates are lognormal
  across clients (heavy-tailed for the large population, whose rate also follows a
  sinusoidal day). Attackers send at ordinary per-client rates (the 75th percentile of the
  benign rates), so a flood detector does not catch them for free.
- **Ids**: event ids are ``<scenario>:<global index>`` (see :func:`event_index`), client ids
  ``user-<n>``; attackers are ``client-x<n>`` / ``sybil-<n>``, indistinguishable in form.

Everything is seeded (``seed`` and the scenario name); ``size="quick"`` gives CI-sized
streams, ``size="full"`` the report's (over a million benign events in the population).

>>> sc = build("flood_30x_median", size="quick", seed=0)
>>> sc.expected_detector, sorted(sc.attacker_clients), sc.stream[0].key
('query_flood', ['client-x0'], ('wine-lr', '1'))
>>> ts = sc.concat().ts
>>> bool((ts[1:] >= ts[:-1]).all()), event_index(str(sc.concat().event_id[sc.onset_index]))
(True, 7000)
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from benchmarks.synthetic import T0_MS
from detectors.block import EventBlock

DAY_MS = 86_400_000
BLOCK_EVENTS = 5_000


# --------------------------------------------------------------------------------------
# The scenario type
# --------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """One labelled stream: a benign reference, the traffic, and where the truth lies.

    ``tier`` says what the suite may assert: ``core`` scenarios must be detected,
    ``stretch`` ones are reported (known limitations or detectors still landing) and
    ``control`` ones cannot be seen by any input/confidence detector by construction
    (label-only concept drift) and exist to show that.
    ``river_series`` names what river's drift detectors are run on for comparison
    (``features``, ``confidence`` or ``None`` where they do not apply).
    """

    name: str
    family: str  # drift | confidence | flood | extraction | benign
    reference: EventBlock
    stream: list[EventBlock]
    onset_index: int | None
    onset_ms: int | None
    attacker_clients: set[str]
    expected_detector: str | None  # drift | confidence_shift | query_flood | extraction
    notes: str
    tier: str = "core"
    river_series: str | None = None
    params: dict = field(default_factory=dict)

    @property
    def events(self) -> int:
        return sum(len(b) for b in self.stream)

    def concat(self) -> EventBlock:
        """The whole stream as one block."""
        return EventBlock.concat(self.stream)


def event_index(event_id: str) -> int:
    """Global stream index of an event id made by this module (``name:index``).

    >>> event_index("drift_wine_new_cultivar:1234")
    1234
    """
    return int(event_id.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Sizes:
    """How big each kind of scenario is."""

    ref: int  # reference events for model-level scenarios
    pre: int  # benign events before the onset
    post: int  # events after the onset (model-level scenarios)
    attack: int  # attacker queries (per-client scenarios)
    sybils: int  # client ids of the sybil campaign
    flood_s: int  # seconds a flood lasts
    population_clients: int
    population_events: int  # benign events of the diurnal day (expected)
    population_ref_hours: float


SIZES = {
    "quick": Sizes(ref=4_000, pre=7_000, post=6_000, attack=400, sybils=20, flood_s=120,
                   population_clients=1_000, population_events=100_000,
                   population_ref_hours=4.0),
    "full": Sizes(ref=10_000, pre=40_000, post=20_000, attack=1_500, sybils=25, flood_s=300,
                  population_clients=5_000, population_events=1_200_000,
                  population_ref_hours=4.0),
}


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# --------------------------------------------------------------------------------------
# Data: scikit-learn datasets, a smoothed bootstrap, a fixed model
# --------------------------------------------------------------------------------------
class Model:
    """A fixed fitted classifier: features in, class probabilities out."""

    def __init__(self, model_id: str, estimator, n_classes: int) -> None:
        self.model_id = model_id
        self.estimator = estimator
        self.n_classes = n_classes

    def scores(self, X: np.ndarray) -> np.ndarray:
        with _one_thread():
            p = self.estimator.predict_proba(np.asarray(X, dtype=np.float64))
        p = np.clip(p, 0.0, 1.0)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    def linear(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(mu, sd, W, b)`` of a scaler + multinomial logistic regression pipeline.

        Logits are ``((x - mu) / sd) @ W.T + b``; attack generators use them for gradients
        and decision boundaries (an attacker would use a substitute model; the oracle's own
        is the worst case for the defender).
        """
        scaler, lr = self.estimator[0], self.estimator[-1]
        return scaler.mean_, scaler.scale_, lr.coef_, lr.intercept_


def _one_thread():
    """One BLAS thread: on small products, threads only oversubscribe the cores (20x slower)."""
    from threadpoolctl import threadpool_limits  # ships with scikit-learn

    return threadpool_limits(limits=1)


def _fit_lr(X: np.ndarray, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with _one_thread():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(X, y)


class KDEPool:
    """Smoothed bootstrap of a dataset, per class (Gaussian KDE, Silverman bandwidth).

    A draw is a resampled row of the requested class plus ``h * L z`` with ``L L^T`` the
    class covariance and ``h`` Silverman's factor ``(4 / (d + 2)) ** (1 / (d + 4)) *
    n ** (-1 / (d + 4))`` times ``bandwidth_scale``. Results are clipped to the dataset's
    observed range per feature.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, bandwidth_scale: float = 0.5) -> None:
        self.X = np.asarray(X, dtype=np.float64)
        self.y = np.asarray(y)
        self.classes = np.unique(self.y)
        self.lo, self.hi = self.X.min(axis=0), self.X.max(axis=0)
        self.sd = self.X.std(axis=0)
        n, d = self.X.shape
        self.h = bandwidth_scale * (4.0 / (d + 2)) ** (1.0 / (d + 4)) * n ** (-1.0 / (d + 4))
        self.rows = {c: np.flatnonzero(self.y == c) for c in self.classes}
        self.chol = {}
        for c, idx in self.rows.items():
            cov = np.cov(self.X[idx], rowvar=False) + np.diag(1e-3 * self.sd**2 + 1e-9)
            self.chol[c] = np.linalg.cholesky(cov)

    @property
    def d(self) -> int:
        return self.X.shape[1]

    def sample(
        self, rng: np.random.Generator, n: int, class_probs: dict | None = None,
        row_weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """``n`` rows; classes by ``class_probs`` (default: the dataset's own mix).

        ``row_weights`` (one per dataset row) resamples rows by importance instead, for
        covariate shift within a class.
        """
        if row_weights is not None:
            p = row_weights / row_weights.sum()
            src = rng.choice(self.X.shape[0], size=n, p=p)
        else:
            if class_probs is None:
                cls = self.y[rng.integers(0, self.y.size, n)]
            else:
                keys = list(class_probs)
                pr = np.array([class_probs[k] for k in keys], dtype=np.float64)
                cls = np.asarray(keys)[rng.choice(len(keys), size=n, p=pr / pr.sum())]
            src = np.empty(n, dtype=np.int64)
            for c in np.unique(cls):
                sel = np.flatnonzero(cls == c)
                src[sel] = rng.choice(self.rows[c], size=sel.size)
        out = self.X[src].copy()
        z = rng.standard_normal((n, self.d))
        src_cls = self.y[src]
        for c in np.unique(src_cls):
            sel = src_cls == c
            out[sel] += self.h * (z[sel] @ self.chol[c].T)
        return np.clip(out, self.lo, self.hi)


@cache
def dataset(name: str) -> tuple[KDEPool, Model]:
    """The smoothed-bootstrap pool and the fixed model of a scikit-learn dataset."""
    from sklearn import datasets

    if name == "diabetes":
        X, target = datasets.load_diabetes(return_X_y=True)
        y = (target > np.median(target)).astype(int)  # "progression above median"
        pool = KDEPool(X, np.zeros_like(y))  # one population; labels only train the model
    else:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        pool = KDEPool(X, y)
    model = Model(f"{name.replace('_', '-')}-lr", _fit_lr(X, y), int(np.unique(y).size))
    return pool, model


# --------------------------------------------------------------------------------------
# Event time: per-client Poisson arrivals
# --------------------------------------------------------------------------------------
@dataclass
class Population:
    """Benign clients and their mean query rates (queries per second)."""

    clients: np.ndarray  # object (str)
    rates: np.ndarray  # float64

    @classmethod
    def lognormal(
        cls, rng: np.random.Generator, n: int, median_rate: float, sigma: float,
        prefix: str = "user",
    ) -> Population:
        rates = median_rate * np.exp(sigma * rng.standard_normal(n))
        clients = np.array([f"{prefix}-{i}" for i in range(n)], dtype=object)
        return cls(clients, rates)

    @property
    def total_rate(self) -> float:
        return float(self.rates.sum())

    def rate_quantile(self, q: float) -> float:
        return float(np.quantile(self.rates, q))


def _diurnal_grid(start_ms: int, duration_ms: int, amp: float, peak_ms: int):
    grid = np.linspace(start_ms, start_ms + duration_ms, 8193)
    inten = 1.0 + amp * np.cos(2 * np.pi * (grid - peak_ms) / DAY_MS)
    cum = np.concatenate([[0.0], np.cumsum((inten[1:] + inten[:-1]) / 2 * np.diff(grid))])
    return grid, cum


def arrivals(
    rng: np.random.Generator, rates: np.ndarray, start_ms: int, duration_ms: int,
    diurnal_amp: float = 0.0, peak_ms: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson arrivals of every client over ``[start_ms, start_ms + duration_ms)``.

    With ``diurnal_amp`` the rate is multiplied by ``1 + amp * cos(2 pi (t - peak) / day)``
    (time-changed Poisson process). Returns ``(ts, client_index)`` sorted by time.
    """
    if diurnal_amp:
        grid, cum = _diurnal_grid(start_ms, duration_ms, diurnal_amp, peak_ms)
        mass = cum[-1] / 1000.0  # integrated multiplier, in seconds
    else:
        mass = duration_ms / 1000.0
    counts = rng.poisson(rates * mass)
    who = np.repeat(np.arange(rates.size), counts)
    u = rng.random(who.size)
    if diurnal_amp:
        t = np.interp(u * cum[-1], cum, grid)
    else:
        t = start_ms + u * duration_ms
    ts = t.astype(np.int64)
    order = np.argsort(ts, kind="stable")
    return ts[order], who[order]


def poisson_times(rng: np.random.Generator, rate: float, start_ms: int, n: int) -> np.ndarray:
    """``n`` Poisson arrival times of one client at ``rate`` queries/s from ``start_ms``."""
    gaps = rng.exponential(1000.0 / rate, n)
    gaps[0] = 0.0
    return (start_ms + np.cumsum(gaps)).astype(np.int64)


def _make_block(
    name: str, model: Model, ts: np.ndarray, clients: np.ndarray, X: np.ndarray,
    id_prefix: str | None = None,
) -> EventBlock:
    S = model.scores(X)
    prefix = id_prefix if id_prefix is not None else name
    return EventBlock(
        model_id=model.model_id,
        model_version="1",
        event_id=np.array([f"{prefix}:{i}" for i in range(ts.size)], dtype=object),
        ts=np.asarray(ts, dtype=np.int64),
        client_id=np.asarray(clients, dtype=object),
        X=np.asarray(X, dtype=np.float32),
        scores=S,
        confidence=S.max(axis=1),
        prediction=np.array([str(c) for c in S.argmax(axis=1)], dtype=object),
    )


def chunks(block: EventBlock, size: int = BLOCK_EVENTS) -> list[EventBlock]:
    """Split a block into consecutive blocks of at most ``size`` events."""
    return [block.take(slice(i, i + size)) for i in range(0, len(block), size)]


def _reference(
    name: str, rng: np.random.Generator, model: Model, pop: Population, n: int, end_ms: int,
    rows: Callable[[int], np.ndarray],
) -> EventBlock:
    """``n`` benign events of ``pop`` ending one minute before ``end_ms``."""
    duration = int(1.15 * n / pop.total_rate * 1000) + 1000
    ts, who = arrivals(rng, pop.rates, end_ms - 60_000 - duration, duration)
    ts, who = ts[:n], who[:n]
    return _make_block(name, model, ts, pop.clients[who], rows(ts.size), id_prefix=f"{name}-ref")


def _benign_span(rng, pop: Population, n: int, start_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``n`` benign arrivals of ``pop`` from ``start_ms`` on."""
    while True:
        duration = int(1.2 * n / pop.total_rate * 1000) + 1000
        ts, who = arrivals(rng, pop.rates, start_ms, duration)
        if ts.size >= n:
            return ts[:n], who[:n]


# --------------------------------------------------------------------------------------
# Model-level scenarios: drift and confidence
# --------------------------------------------------------------------------------------
def _model_level(
    name: str, family: str, seed: int, size: str, ds: str,
    before: Callable[[np.random.Generator, int], np.ndarray],
    after: Callable[[np.random.Generator, int], np.ndarray],
    expected: str, notes: str, tier: str = "core", river_series: str = "features",
    n_clients: int = 40, params: dict | None = None,
) -> Scenario:
    sz = SIZES[size]
    rng = _rng(seed, name)
    _, model = dataset(ds)
    pop = Population.lognormal(rng, n_clients, median_rate=0.5, sigma=0.6)
    start = T0_MS
    ref = _reference(name, rng, model, pop, sz.ref, start, lambda k: before(rng, k))
    ts, who = _benign_span(rng, pop, sz.pre + sz.post, start)
    X = np.concatenate([before(rng, sz.pre), after(rng, sz.post)])
    full = _make_block(name, model, ts, pop.clients[who], X)
    return Scenario(
        name=name, family=family, reference=ref, stream=chunks(full), onset_index=sz.pre,
        onset_ms=int(ts[sz.pre]), attacker_clients=set(), expected_detector=expected,
        notes=notes, tier=tier, river_series=river_series, params=params or {},
    )


def drift_breast_cancer_case_mix(seed: int = 0, size: str = "full") -> Scenario:
    pool, _ = dataset("breast_cancer")
    return _model_level(
        "drift_breast_cancer_case_mix", "drift", seed, size, "breast_cancer",
        lambda r, n: pool.sample(r, n, {0: 0.373, 1: 0.627}),
        lambda r, n: pool.sample(r, n, {0: 0.55, 1: 0.45}),
        "drift",
        "Case mix shift: malignant share of queries 37% -> 55% (a new referral source). "
        "Inputs move on the tumour-size features; scores come from the fixed model.",
        params={"malignant_share": [0.373, 0.55]},
    )


def drift_wine_new_cultivar(seed: int = 0, size: str = "full") -> Scenario:
    pool, _ = dataset("wine")
    return _model_level(
        "drift_wine_new_cultivar", "drift", seed, size, "wine",
        lambda r, n: pool.sample(r, n, {0: 0.5, 1: 0.5}),
        lambda r, n: pool.sample(r, n, {0: 0.4, 1: 0.4, 2: 0.2}),
        "drift",
        "New segment: the reference holds cultivars 0 and 1 only; after onset 20% of "
        "queries come from cultivar 2.",
        params={"new_segment_share": 0.2},
    )


def drift_digits_sensor_gain(seed: int = 0, size: str = "full") -> Scenario:
    pool, _ = dataset("digits")
    cols = np.argsort(-pool.sd)[:4]

    def after(r: np.random.Generator, n: int) -> np.ndarray:
        X = pool.sample(r, n)
        X[:, cols] *= 0.7
        return X

    return _model_level(
        "drift_digits_sensor_gain", "drift", seed, size, "digits",
        lambda r, n: pool.sample(r, n), after, "drift",
        f"Calibration fault: gain 0.7 on 4 of 64 pixel features ({', '.join(map(str, cols))}).",
        params={"features": cols.tolist(), "gain": 0.7},
    )


def drift_diabetes_bmi_shift(seed: int = 0, size: str = "full") -> Scenario:
    pool, _ = dataset("diabetes")
    bmi = pool.X[:, 2]
    w = np.exp(0.5 * (bmi - bmi.mean()) / bmi.std())
    return _model_level(
        "drift_diabetes_bmi_shift", "drift", seed, size, "diabetes",
        lambda r, n: pool.sample(r, n), lambda r, n: pool.sample(r, n, row_weights=w),
        "drift",
        "Covariate shift: patients reweighted by exp(0.5 * BMI z-score) (an obesity clinic "
        "joins); BMI and correlated features move by about half a standard deviation.",
        params={"tilt": 0.5},
    )


def confidence_digits_noise(seed: int = 0, size: str = "full") -> Scenario:
    pool, _ = dataset("digits")

    def after(r: np.random.Generator, n: int) -> np.ndarray:
        X = pool.sample(r, n)
        return np.clip(X + r.normal(0.0, 1.0, X.shape) * pool.sd, pool.lo, pool.hi)

    return _model_level(
        "confidence_digits_noise", "confidence", seed, size, "digits",
        lambda r, n: pool.sample(r, n), after, "confidence_shift",
        "Sensor noise: Gaussian noise of one feature standard deviation on every pixel; "
        "scores recomputed, mean confidence drops. Input drift fires too (expected).",
        river_series="confidence", params={"noise_sd": 1.0},
    )


def confidence_wine_noise(seed: int = 0, size: str = "full") -> Scenario:
    pool, _ = dataset("wine")

    def after(r: np.random.Generator, n: int) -> np.ndarray:
        X = pool.sample(r, n)
        return np.clip(X + r.normal(0.0, 0.5, X.shape) * pool.sd, pool.lo, pool.hi)

    return _model_level(
        "confidence_wine_noise", "confidence", seed, size, "wine",
        lambda r, n: pool.sample(r, n), after, "confidence_shift",
        "Milder noise: half a standard deviation on every feature; mean confidence drops "
        "0.95 -> 0.93. The effect (KS about 0.06) is below what a 1000-event window resolves "
        "at a one-per-million budget, so detection, if any, is a chance crossing.",
        tier="stretch", river_series="confidence", params={"noise_sd": 0.5},
    )


# -- river synthetic streams ---------------------------------------------------------------
def _river_xy(stream, n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = list(itertools.islice(stream, n))
    X = np.array([list(x.values()) for x, _ in rows], dtype=np.float64)
    y = np.array([y for _, y in rows])
    return X, y


def _river_scenario(
    name: str, seed: int, size: str, make_stream: Callable[[int], object],
    make_drift_stream: Callable[[int], object], width: int, notes: str, tier: str = "core",
) -> Scenario:
    """A ``river.datasets.synth.ConceptDriftStream`` with a known transition.

    river's share of the drift stream at 1-based sample ``t`` is
    ``1 / (1 + exp(-4 (t - position) / width))``; the onset is put where the transition
    starts (share 12%, ``width / 2`` before ``position``).
    """
    from river.datasets.synth import ConceptDriftStream

    sz = SIZES[size]
    rng = _rng(seed, name)
    base_seed = int(rng.integers(1 << 30))
    # The model is fitted on (and the reference drawn from) the pre-drift concept.
    X_fit, y_fit = _river_xy(make_stream(base_seed + 1), 5_000)
    model = Model(name.replace("_", "-"), _fit_lr(X_fit, y_fit), int(np.unique(y_fit).size))
    X_ref, _ = _river_xy(make_stream(base_seed + 2), sz.ref)
    onset = sz.pre
    # river evaluates exp(4 (position - t) / width), which overflows when the position is
    # more than ~175 widths away: draw the head of the pre-drift part from the plain
    # concept and start the ConceptDriftStream 20 widths before the onset.
    lead = min(onset, 20 * width)
    X_head, _ = _river_xy(make_stream(base_seed + 6), onset - lead)
    cds = ConceptDriftStream(
        stream=make_stream(base_seed + 3), drift_stream=make_drift_stream(base_seed + 4),
        position=lead + width // 2 + 1, width=width, seed=base_seed + 5,
    )
    X_tail, _ = _river_xy(cds, lead + sz.post)
    X = np.concatenate([X_head, X_tail]) if len(X_head) else X_tail
    pop = Population.lognormal(rng, 40, median_rate=0.5, sigma=0.6)
    start = T0_MS
    ref = _reference(name, rng, model, pop, sz.ref, start, lambda k: X_ref[:k])
    ts, who = _benign_span(rng, pop, X.shape[0], start)
    full = _make_block(name, model, ts, pop.clients[who], X)
    return Scenario(
        name=name, family="drift", reference=ref, stream=chunks(full), onset_index=onset,
        onset_ms=int(ts[onset]), attacker_clients=set(), expected_detector="drift",
        notes=notes, tier=tier, river_series="features", params={"width": width},
    )


def drift_river_rbf_gradual(seed: int = 0, size: str = "full") -> Scenario:
    from river.datasets.synth import RandomRBF

    def mk(model_seed: int):
        return lambda s: RandomRBF(seed_model=model_seed, seed_sample=s, n_classes=3,
                                   n_features=8, n_centroids=30)

    return _river_scenario(
        "drift_river_rbf_gradual", seed, size, mk(11), mk(12), width=2_000,
        notes="river ConceptDriftStream of RandomRBF (8 features, 30 centroids): the "
        "centroids are redrawn, so the input distribution changes; gradual, width 2000.",
    )


def drift_river_led_swap(seed: int = 0, size: str = "full") -> Scenario:
    from river.datasets.synth import LEDDrift

    return _river_scenario(
        "drift_river_led_swap", seed, size,
        lambda s: LEDDrift(seed=s, noise_percentage=0.1, irrelevant_features=True),
        lambda s: LEDDrift(seed=s, noise_percentage=0.1, irrelevant_features=True,
                           n_drift_features=3),
        width=100,
        notes="river LEDDrift (24 binary features): 3 segment attributes swap places with "
        "irrelevant ones, changing their marginals (about 0.75 -> 0.5); abrupt, width 100.",
    )


def control_river_sea_label_only(seed: int = 0, size: str = "full") -> Scenario:
    from river.datasets.synth import SEA

    return _river_scenario(
        "control_river_sea_label_only", seed, size,
        lambda s: SEA(variant=0, noise=0.05, seed=s), lambda s: SEA(variant=3, noise=0.05, seed=s),
        width=100, tier="control",
        notes="river SEA variant 0 -> 3: only the labelling threshold changes; inputs stay "
        "uniform on [0, 10]^3 and a fixed model's confidence does not move. No input or "
        "confidence detector can see it (error-rate monitoring with labels would).",
    )


# --------------------------------------------------------------------------------------
# Per-client scenarios: flood and extraction
# --------------------------------------------------------------------------------------
def _per_client(
    name: str, family: str, rng: np.random.Generator, size: str, ds: str, pop: Population,
    attack_ts: np.ndarray, attack_clients: np.ndarray, attack_X: np.ndarray,
    expected: str, notes: str, tier: str, pre: int | None = None,
    benign_rows: Callable[[np.random.Generator, int], np.ndarray] | None = None,
    params: dict | None = None, tail_ms: int = 60_000,
) -> Scenario:
    """Benign traffic of ``pop`` with an attack merged in, onset after ``pre`` benign events.

    ``attack_ts`` must be relative to the onset (``0`` = the first attacker query).
    """
    sz = SIZES[size]
    pool, model = dataset(ds)
    rows = benign_rows or (lambda r, n: pool.sample(r, n))
    pre = sz.pre if pre is None else pre
    start = T0_MS
    ref = _reference(name, rng, model, pop, sz.ref, start, lambda k: rows(rng, k))
    pre_ts, pre_who = _benign_span(rng, pop, pre + 1, start)
    onset_ms = int(pre_ts[-1])  # the first attack query arrives after `pre` benign events
    pre_ts, pre_who = pre_ts[:-1], pre_who[:-1]
    attack_abs = onset_ms + np.asarray(attack_ts, dtype=np.int64)
    end_ms = int(attack_abs[-1]) + tail_ms
    post_ts, post_who = arrivals(rng, pop.rates, onset_ms, end_ms - onset_ms)
    post_ts = np.maximum(post_ts, onset_ms + 1)  # benign queries at the onset tick come after
    ts = np.concatenate([pre_ts, attack_abs, post_ts])
    clients = np.concatenate([pop.clients[pre_who], attack_clients, pop.clients[post_who]])
    X = np.concatenate([rows(rng, pre_ts.size), attack_X, rows(rng, post_ts.size)])
    order = np.argsort(ts, kind="stable")
    full = _make_block(name, model, ts[order], clients[order], X[order])
    return Scenario(
        name=name, family=family, reference=ref, stream=chunks(full), onset_index=pre,
        onset_ms=onset_ms, attacker_clients={str(c) for c in np.unique(attack_clients)},
        expected_detector=expected, notes=notes, tier=tier, river_series=None,
        params=params or {},
    )


def _flood(name: str, seed: int, size: str, factor: float, sigma: float, n_clients: int,
           median_rate: float, tier: str, notes: str) -> Scenario:
    sz = SIZES[size]
    rng = _rng(seed, name)
    pool, _ = dataset("wine")
    pop = Population.lognormal(rng, n_clients, median_rate=median_rate, sigma=sigma)
    rate = factor * pop.rate_quantile(0.5)
    n = int(rate * sz.flood_s)
    att_ts = poisson_times(rng, rate, 0, n)
    att_X = pool.sample(rng, n)
    params = {"flood_rate_per_s": round(rate, 3), "median_rate_per_s": pop.rate_quantile(0.5),
              "busiest_rate_per_s": float(pop.rates.max()), "flood_s": sz.flood_s}
    return _per_client(
        name, "flood", rng, size, "wine", pop, att_ts, np.full(n, "client-x0", dtype=object),
        att_X, "query_flood", notes, tier, params=params,
    )


def flood_30x_median(seed: int = 0, size: str = "full") -> Scenario:
    return _flood(
        "flood_30x_median", seed, size, 30.0, sigma=0.6, n_clients=80, median_rate=0.5,
        tier="core",
        notes="One client at 30x the median client rate (15 q/s) among 80 clients with "
        "lognormal(0.6) rates; ordinary-looking inputs.",
    )


def flood_10x_median(seed: int = 0, size: str = "full") -> Scenario:
    return _flood(
        "flood_10x_median", seed, size, 10.0, sigma=0.6, n_clients=80, median_rate=0.5,
        tier="core",
        notes="A softer flood: 10x the median client rate (5 q/s), about twice the busiest "
        "benign client.",
    )


def flood_heavy_tail_50x(seed: int = 0, size: str = "full") -> Scenario:
    return _flood(
        "flood_heavy_tail_50x", seed, size, 50.0, sigma=1.5, n_clients=1_000,
        median_rate=0.01, tier="core",
        notes="50x the median client rate in a heavy-tailed population (lognormal sigma 1.5, "
        "1000 clients): the flooder stays below the busiest benign clients, so only a "
        "comparison with its own (absent) history of shares of the traffic can see it.",
    )


# -- extraction --------------------------------------------------------------------------
def _attack_pop(rng: np.random.Generator) -> Population:
    return Population.lognormal(rng, 60, median_rate=0.5, sigma=0.6)


def _probs_and_grad(model: Model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and the gradient of the top class's probability in raw units."""
    mu, sd, W, b = model.linear()
    Z = (X - mu) / sd
    if W.shape[0] == 1:  # binary: expand to two logits
        W = np.vstack([-W / 2, W / 2])
        b = np.array([-b[0] / 2, b[0] / 2])
    logits = Z @ W.T + b
    logits -= logits.max(axis=1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(axis=1, keepdims=True)
    top = P.argmax(axis=1)
    # d p_c / d z = p_c (w_c - sum_k p_k w_k); chain rule through the scaler.
    gz = P[np.arange(len(X)), top, None] * (W[top] - P @ W)
    return P, gz / sd


def jacobian_augmentation(
    rng: np.random.Generator, model: Model, pool: KDEPool, n: int, n_seeds: int = 10,
    lam: float = 0.1, tau: int = 3,
) -> np.ndarray:
    """Papernot et al.'s Jacobian-based dataset augmentation, as queried by the attacker.

    Round ``r`` adds ``x + lam_r * sd * sign(grad p_top(x))`` for every point so far, with
    the periodic step ``lam_r = lam * (-1) ** (r // tau)``; every new point is a query.
    """
    S = pool.sample(rng, n_seeds)
    out = [S]
    total, r = n_seeds, 0
    while total < n:
        _, g = _probs_and_grad(model, S)
        step = lam * (-1.0) ** (r // tau)
        new = np.clip(S + step * pool.sd * np.sign(g), pool.lo, pool.hi)
        out.append(new)
        S = np.concatenate([S, new])
        total += len(new)
        r += 1
    return np.concatenate(out)[:n]


def boundary_probing(
    rng: np.random.Generator, model: Model, pool: KDEPool, n: int, steps: int = 10,
) -> np.ndarray:
    """Bisection along one or two features towards the top-2 decision boundary.

    For a seed point with top classes ``a`` and ``b``, the attacker walks feature ``j``
    (the one or two with the largest logit-difference weight) by bisection between the
    seed and a point beyond the boundary; queries converge on the boundary, so the top-2
    margin shrinks towards zero (threshold stealing / boundary probing).
    """
    mu, sd, W, b = model.linear()
    if W.shape[0] == 1:
        W = np.vstack([np.zeros_like(W[0]), W[0]])
        b = np.array([0.0, b[0]])
    out: list[np.ndarray] = []
    total = 0
    while total < n:
        x = pool.sample(rng, 1)[0]
        z = (x - mu) / sd
        lg = W @ z + b
        a, c = np.argsort(-lg)[:2]
        dw = (W[a] - W[c]) / sd  # logit difference per raw unit of each feature
        gap = lg[a] - lg[c]
        for j in np.argsort(-np.abs(dw))[:2]:
            t_star = -gap / dw[j]  # raw-unit move of feature j that reaches the boundary
            if abs(t_star) > 4 * pool.sd[j]:
                continue
            lo, hi = 0.0, 2.0 * t_star
            for _ in range(steps):
                mid = (lo + hi) / 2
                q = x.copy()
                q[j] += mid
                out.append(q)
                total += 1
                # the oracle's answer tells which side the query fell on
                same = (W @ ((q - mu) / sd) + b).argmax() == a
                lo, hi = (mid, hi) if same else (lo, mid)
    return np.array(out[:n])


def near_duplicate_walk(
    rng: np.random.Generator, model: Model, pool: KDEPool, n: int, noise: float = 0.01,
    every: int = 25, step: float = 0.05,
) -> np.ndarray:
    """Iterative query-based attack traffic (what Blacklight detects).

    Each query is the current iterate plus Gaussian noise of ``noise`` feature standard
    deviations; every ``every`` queries the iterate moves ``step`` standard deviations
    down the top class's probability gradient (towards misclassification).
    """
    cur = pool.sample(rng, 1)[0]
    out = np.empty((n, pool.d))
    for i in range(n):
        if i and i % every == 0:
            _, g = _probs_and_grad(model, cur[None, :])
            cur = np.clip(cur - step * pool.sd * np.sign(g[0]), pool.lo, pool.hi)
        out[i] = cur + rng.normal(0.0, noise, pool.d) * pool.sd
    return np.clip(out, pool.lo, pool.hi)


def _extraction(
    name: str, seed: int, size: str, make_queries: Callable, notes: str, n_sybils: int = 0,
) -> Scenario:
    sz = SIZES[size]
    rng = _rng(seed, name)
    pool, model = dataset("wine")
    pop = _attack_pop(rng)
    rate = pop.rate_quantile(0.75)
    X = make_queries(rng, model, pool, sz.attack)
    n = len(X)
    if n_sybils:
        per = np.full(n_sybils, n // n_sybils)
        per[: n % n_sybils] += 1
        ids = np.array([f"sybil-{i}" for i in range(n_sybils)], dtype=object)
        owner = np.repeat(np.arange(n_sybils), per)
        ts = np.concatenate([poisson_times(rng, rate, 0, k) for k in per])
        ts += rng.integers(0, int(1000 / rate) + 1, n_sybils).repeat(per)  # staggered starts
        order = np.argsort(ts, kind="stable")
        att_ts, att_clients = ts[order] - ts.min(), ids[owner[order]]
    else:
        att_ts = poisson_times(rng, rate, 0, n)
        att_clients = np.full(n, "client-x0", dtype=object)
    params = {"attacker_rate_per_s": round(rate, 3), "queries": n,
              "median_rate_per_s": round(pop.rate_quantile(0.5), 3),
              "sybils": n_sybils}
    # The campaign's queries are sent in generation order: X[i] goes out at att_ts[i].
    return _per_client(
        name, "extraction", rng, size, "wine", pop, att_ts, att_clients, X, "extraction",
        notes, "stretch", params=params,
    )


def extraction_uniform_random(seed: int = 0, size: str = "full") -> Scenario:
    return _extraction(
        "extraction_uniform_random", seed, size,
        lambda r, m, p, n: p.lo + r.random((n, p.d)) * (p.hi - p.lo),
        "Queries uniform over the feature bounding box (Tramer et al.'s retraining "
        "attack); one client at an ordinary rate.",
    )


def extraction_jacobian_augmentation(seed: int = 0, size: str = "full") -> Scenario:
    return _extraction(
        "extraction_jacobian_augmentation", seed, size, jacobian_augmentation,
        "Papernot/PRADA-style synthetic queries: 10 seed points grown by Jacobian-sign "
        "steps of 0.1 sd (periodic sign, tau=3); one client at an ordinary rate.",
    )


def extraction_boundary_probing(seed: int = 0, size: str = "full") -> Scenario:
    return _extraction(
        "extraction_boundary_probing", seed, size, boundary_probing,
        "Threshold probing: bisection along the 1-2 most decisive features of seed points "
        "towards the top-2 boundary (10 queries per line); the top-2 margin shrinks.",
    )


def extraction_sybil_jacobian(seed: int = 0, size: str = "full") -> Scenario:
    n = SIZES[size].sybils
    return _extraction(
        "extraction_sybil_jacobian", seed, size, jacobian_augmentation,
        f"The Jacobian-augmentation campaign split round-robin in time over {n} client ids, "
        "each at an ordinary rate and sending only a few dozen queries.",
        n_sybils=n,
    )


def extraction_near_duplicates(seed: int = 0, size: str = "full") -> Scenario:
    return _extraction(
        "extraction_near_duplicates", seed, size, near_duplicate_walk,
        "Blacklight-style iterative attack: one seed input plus 0.01-sd noise, stepping "
        "0.05 sd down the gradient every 25 queries.",
    )


# --------------------------------------------------------------------------------------
# The large benign population
# --------------------------------------------------------------------------------------
def benign_diurnal_population(seed: int = 0, size: str = "full") -> Scenario:
    """A day of benign traffic: thousands of heavy-tailed clients on a sinusoidal day.

    The reference is four hours around the previous day's peak (a baseline built from
    quiet hours would make every afternoon a flood).
    """
    name = "benign_diurnal_population"
    sz = SIZES[size]
    rng = _rng(seed, name)
    pool, model = dataset("wine")
    pop = Population.lognormal(rng, sz.population_clients, median_rate=1.0, sigma=1.5)
    pop.rates *= sz.population_events / (pop.total_rate * DAY_MS / 1000)
    amp, peak = 0.6, 15 * 3_600_000  # 15:00 UTC peak, 0.4x at night, 1.6x at the peak
    start = T0_MS
    ref_len = int(sz.population_ref_hours * 3_600_000)
    ref_ts, ref_who = arrivals(rng, pop.rates, start - DAY_MS + peak - ref_len // 2, ref_len,
                               amp, start - DAY_MS + peak)
    ref = _make_block(name, model, ref_ts, pop.clients[ref_who], pool.sample(rng, ref_ts.size),
                      id_prefix=f"{name}-ref")
    ts, who = arrivals(rng, pop.rates, start, DAY_MS, amp, start + peak)
    full = _make_block(name, model, ts, pop.clients[who], pool.sample(rng, ts.size))
    return Scenario(
        name=name, family="benign", reference=ref, stream=chunks(full), onset_index=None,
        onset_ms=None, attacker_clients=set(), expected_detector=None,
        notes=f"{sz.population_clients} clients with lognormal(1.5) rates over one day, rate "
        "x(1 + 0.6 cos) peaking at 15:00; reference = 4 h around the previous day's peak. "
        "Every incident is a false alarm.",
        tier="core", river_series="features",
        params={"clients": sz.population_clients, "diurnal_amp": amp,
                "busiest_rate_per_s": float(pop.rates.max()),
                "median_rate_per_s": float(np.median(pop.rates))},
    )


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------
SCENARIOS: dict[str, Callable[..., Scenario]] = {
    f.__name__: f
    for f in (
        drift_breast_cancer_case_mix,
        drift_wine_new_cultivar,
        drift_digits_sensor_gain,
        drift_diabetes_bmi_shift,
        drift_river_rbf_gradual,
        drift_river_led_swap,
        control_river_sea_label_only,
        confidence_digits_noise,
        confidence_wine_noise,
        flood_30x_median,
        flood_10x_median,
        flood_heavy_tail_50x,
        extraction_uniform_random,
        extraction_jacobian_augmentation,
        extraction_boundary_probing,
        extraction_sybil_jacobian,
        extraction_near_duplicates,
        benign_diurnal_population,
    )
}


def build(name: str, size: str = "full", seed: int = 0) -> Scenario:
    """Generate one scenario by name."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SCENARIOS[name](seed=seed, size=size)


def build_all(size: str = "full", seed: int = 0, only: list[str] | None = None
              ) -> Iterator[Scenario]:
    """Every scenario (or those named in ``only``), generated one at a time."""
    for name in SCENARIOS:
        if only is None or name in only:
            yield build(name, size, seed)
