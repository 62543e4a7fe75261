"""Model extraction and evasion probing, per client: four signals over a client's queries.

An attacker copying a model or searching for an evasion sends queries unlike a real
user's. For each (model, client) the kernel keeps a bounded record of the client's
recent queries and tests four signals, each calibrated on the model's baseline:

``query_concentration``
    The same nearest-neighbour distances, standardised by their benign mean and spread
    for the history length (from simulated benign clients), averaged over the client's
    recent queries: augmentation around a few seed points or a narrow sweep sits far
    closer together than real users' queries, random scanning far wider apart.
``query_distance_normality`` (after PRADA, Juuti et al. 2019)
    For every query, the distance to the nearest of the client's previous ``HISTORY``
    queries (standardised features, random projection to ``PROJ`` dimensions). Natural
    queries give a smooth distance distribution; synthetic ones (augmentation around
    seed points, step-wise searches) do not. Shapiro-Wilk W of the last up to
    ``DISTANCES`` distances is tested once a client has sent 100 queries; the threshold
    on ``ln(1 - W)`` comes from simulated benign clients drawn from the baseline.
``near_duplicates`` (after Blacklight, Li et al. 2022)
    Each query's standardised features are quantised (``QUANT_STEP`` baseline standard
    deviations) and hashed; a query whose hash the client sent among its last
    ``HISTORY`` queries is a near-duplicate. The chance of that for a benign query
    follows from the baseline's own hash collisions.
``boundary_probing``
    Share of the client's queries whose confidence falls in the baseline's lowest decile:
    an attacker mapping a decision threshold lives near it.
``out_of_distribution``
    Mean surprisal of the client's queries under the baseline's per-feature bin shares:
    uniform random queries over the input space land in bins real traffic rarely uses.

Counts are tested with binomial tails and the means with normal bounds, all at
``alpha = TEST_EVERY / (budget x 5)``; the distance mean's bound is widened by the
correlation of successive distances, measured on the simulated clients. Evidence names
the features the client swept most narrowly (smallest spread relative to the baseline),
the fingerprint of a threshold probe.

Memory: ``capacity x bytes_per_client(d)``: about 5.5 kB + 8 bytes per feature (8,192
clients with 32 features take 47 MB per model version). Least recently seen clients are evicted. The
nearest-neighbour search is exact within the last ``HISTORY`` queries; the random
projection keeps pairwise distances within about +-30 % (Johnson-Lindenstrauss, 16 dims).
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from detectors.baseline import Profile
from detectors.binning import BinEdges, block_bins
from detectors.block import EventBlock, derived_input
from detectors.calibration import alpha_per_check, normal_upper
from detectors.client_table import block_client_keys, find_slot
from detectors.config import DetectorConfig
from detectors.detection import Detection
from detectors.shapiro import shapiro_coefficients, shapiro_w

HISTORY = 32  # previous queries kept per client for nearest-neighbour and duplicate search
DISTANCES = 128  # most recent nearest-neighbour distances tested for normality
FLAGS = 128  # recent queries over which duplicate / low-confidence / surprisal are counted
PROJ = 16  # random projection dimensions for distances
QUANT_STEP = 0.25  # hash grid step, in baseline standard deviations
TEST_EVERY = 8  # a client's signals are tested every this many of its queries
MIN_QUERIES = 16  # no count test before this many queries
PRADA_MIN = 100  # Shapiro-Wilk needs enough distances to mean something
LOW_CONF_QUANTILE = 0.1
#: Recent events of the whole model that per-client rates are compared with, so a shift of
#: the entire population (natural drift, a confidence drop) does not flag every client.
POPULATION = 2048
POP_SHORT = 256  # its most recent part, which follows a sudden population shift at once
P_GRID = 48  # low-confidence rates with a precomputed binomial threshold row
GLOBAL = 32  # the model's most recent queries (any client) a query is compared with
GLOBAL_DIMS = 8  # projected dimensions used for that comparison (cost per event: 32 x 8)
SYBIL_EVERY = 64  # the model-level (sybil) test runs every this many events
CLOSE_QUANTILE = 0.01  # a query closer than this benign quantile to recent traffic is "close"
CLOSE_SHUFFLES = 5  # orderings of the reference sample pooled for that quantile
SIM_CLIENTS = 200  # benign clients simulated from the baseline to calibrate distance tests
#: Smallest mean-surprisal excess (nats per feature) worth calling out of distribution: it
#: keeps a single out-of-range value among a client's recent queries from tipping a model
#: whose features are near-uniform (where surprisal barely varies).
SURPRISAL_FLOOR = 0.05
SIGNALS = ("near_duplicates", "boundary_probing", "out_of_distribution",
           "query_concentration", "query_distance_normality", "sybil")


def bytes_per_client(d: int) -> int:
    """Memory of one client slot with ``d`` features."""
    return 8 * 4 + HISTORY * (min(PROJ, d) * 4 + 8) + DISTANCES * 8 + FLAGS * 17 + d * 8


@numba.njit(cache=True, nogil=True)
def _hash_cells(cells):
    """FNV-1a-style hash of a query's grid cells (a serial multiply chain)."""
    h = np.int64(-3750763034362895579)  # FNV-1a offset basis (signed)
    for j in range(cells.shape[0]):
        h = (h ^ cells[j]) * np.int64(1099511628211)
    return h


@numba.njit(cache=True, nogil=True)
def surprisal_many(B, logp):
    """Per-row surprisal under the baseline bin shares, from the rows' baseline bins.

    Summed in column order: allowed to reorder, the compiler vectorises the sum with
    gathers, which ran three times slower than these scalar loads.
    """
    n, d = B.shape
    nb = logp.shape[1]
    flat = logp.ravel()
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for j in range(d):
            s += flat[j * nb + B[i, j]]
        out[i] = s
    return out


@numba.njit(cache=True, nogil=True)
def _standardise_and_hash(X, mean, inv_std, step):
    """Standardised features ``(n, d)`` and their grid hashes ``(n,)``.

    Each row's grid cells are computed first (a loop that vectorises) and hashed after
    (:func:`_hash_cells`): half the time of one loop doing both.
    """
    n, d = X.shape
    Z = np.empty((n, d))
    H = np.empty(n, dtype=np.int64)
    cells = np.empty(d, dtype=np.int64)
    for i in range(n):
        for j in range(d):
            z = (X[i, j] - mean[j]) * inv_std[j]
            Z[i, j] = z
            cells[j] = np.int64(math.floor(z / step))
        H[i] = _hash_cells(cells)
    return Z, H


def query_features(X: np.ndarray, B: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
                   proj: np.ndarray, logp: np.ndarray, step: float) -> tuple[np.ndarray, ...]:
    """What each query contributes regardless of who sent it, for a whole block.

    Returns ``(Z, P, H, S)``: standardised features ``(n, d)``, their random projection
    ``(n, k)``, grid hash ``(n,)`` and surprisal ``(n,)`` (from the baseline bins ``B``).
    Computed block-wise, apart from the per-client pass: the projection is one BLAS
    matrix product (a quarter of the time of a compiled loop of dot products), the rest
    compiled loops that release the GIL.
    """
    Z, H = _standardise_and_hash(X, mean, inv_std, step)
    return Z, Z @ proj, H, surprisal_many(B, logp)


@numba.njit(cache=True, nogil=True)
def grid_hashes(Z, step):
    """Grid hash of every row of standardised features ``Z`` (as :func:`query_features`)."""
    n, d = Z.shape
    out = np.empty(n, dtype=np.int64)
    cells = np.empty(d, dtype=np.int64)
    for i in range(n):
        for j in range(d):
            cells[j] = np.int64(math.floor(Z[i, j] / step))
        out[i] = _hash_cells(cells)
    return out


@numba.njit(cache=True, nogil=True)
def _count_below(a, row, n, v):
    """How many of ``a[row, :n]`` are below ``v``: for ascending values, the first index
    whose value is not below ``v``.

    A count over at most ``DISTANCES`` values vectorises and has no branch to mispredict;
    a branch-free binary search's halving steps are a chain of dependent loads. With
    counts, a distance's insertion (:func:`_push_distance`) took 80 ns against 122.
    """
    c = 0
    for r in range(n):
        c += a[row, r] < v
    return c


@numba.njit(cache=True, nogil=True)
def _count_not_above(a, row, n, v):
    """How many of ``a[row, :n]`` are not above ``v``: for ascending values, the first
    index whose value is above ``v`` (see :func:`_count_below`)."""
    c = 0
    for r in range(n):
        c += a[row, r] <= v
    return c


@numba.njit(cache=True, nogil=True)
def _push_distance(ring, srt, row, count, v):
    """Record distance number ``count`` (from 0) of client ``row`` in its ring and sorted
    copy (rows of the 2-D ``ring`` and ``srt``).

    ``srt[row, :min(count, DISTANCES)]`` holds the ring's values in ascending order. The
    oldest value leaves as ``v`` enters, shifting only the values strictly between the
    two (exact duplicates, distance 0, are common under attack), so the normality test
    needs no sort.

    The per-event helpers of :func:`extraction_update` take whole arrays and a row index,
    never a row's view: each view costs two atomic reference-count updates (a tenth of
    this kernel's time; see :func:`detectors.flood._slide`).
    """
    nd = count if count < DISTANCES else DISTANCES
    pos = count % DISTANCES
    if count < DISTANCES:  # nothing leaves: insert after the values not above ``v``
        ins = _count_not_above(srt, row, nd, v)
        for r in range(nd, ins, -1):
            srt[row, r] = srt[row, r - 1]
        srt[row, ins] = v
        ring[row, pos] = v
        return
    old = ring[row, pos]
    ring[row, pos] = v
    if v > old:  # the last copy of ``old`` leaves; values in (old, v) move down one
        rem = _count_not_above(srt, row, nd, old) - 1
        ins = _count_below(srt, row, nd, v)
        for r in range(rem, ins - 1):
            srt[row, r] = srt[row, r + 1]
        srt[row, ins - 1] = v
    elif v < old:  # the first copy of ``old`` leaves; values in (v, old) move up one
        rem = _count_below(srt, row, nd, old)
        ins = _count_not_above(srt, row, nd, v)
        for r in range(rem, ins, -1):
            srt[row, r] = srt[row, r - 1]
        srt[row, ins] = v


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _nearest_sq(P, i, rows, slot, n_rows, k):
    """Smallest squared distance from ``P[i, :k]`` to the first ``n_rows`` rows of
    ``rows[slot]`` (``inf`` when there are none). Rows are stored query-major so each
    distance is one contiguous sum, which vectorises (its terms' order is the compiler's).
    """
    best = np.inf
    for r in range(n_rows):
        acc = 0.0
        for q in range(k):
            diff = P[i, q] - rows[slot, r, q]
            acc += diff * diff
        if acc < best:
            best = acc
    return best


@numba.njit(cache=True, nogil=True)
def extraction_update(
    keys_in, ts, Z, P, H, S, conf, conf_low,
    thr_dup, thr_low, surp_mu, surp_sd, nn_mu, nn_sd, z_nn, z_alpha, prada_a, prada_mu, prada_sd,
    report_interval,
    keys, last_seen, last_report, nq, hist, hashes, dists, sdists, flags, surp, resid, fsum,
    fsq, stats, exp_low, exp_surp, p_grid, pop_surp, pop_low, pop_meta, pop_sums, close_thr,
    thr_close, g_hist, pop_key,
):
    """Score each query into its client's state; return the tests that fired.

    ``Z, P, H, S`` are the block's :func:`query_features`.

    Returns ``(rows, signal, statistic, threshold, recent_queries_tested)``; ``stats[0]``
    counts evictions.
    """
    n, d = Z.shape
    k = P.shape[1]
    rows = np.empty(2 * n, dtype=np.int64)
    sig = np.empty(2 * n, dtype=np.int64)
    span = np.empty(2 * n, dtype=np.int64)
    stat = np.empty(2 * n, dtype=np.float64)
    thr = np.empty(2 * n, dtype=np.float64)
    m_out = 0
    buf = np.empty(DISTANCES)
    g3 = g_hist.reshape((1,) + g_hist.shape)  # the model's recent queries, as one "client"
    for i in range(n):
        t = ts[i]
        slot, fresh = find_slot(keys, last_seen, keys_in[i], t)
        if fresh:
            if last_seen[slot] != 0:
                stats[0] += 1
            nq[slot] = 0
            last_report[slot] = -(1 << 62)
            for j in range(d):
                fsum[slot, j] = 0.0
                fsq[slot, j] = 0.0
        if t > last_seen[slot]:
            last_seen[slot] = t
        c = nq[slot]
        for j in range(d):
            zj = Z[i, j]
            fsum[slot, j] += zj
            fsq[slot, j] += zj * zj
        h = H[i]
        n_hist = c if c < HISTORY else HISTORY
        best = _nearest_sq(P, i, hist, slot, n_hist, k)
        dup = 0
        for r in range(n_hist):
            if hashes[slot, r] == h:
                dup = 1
        pos = c % HISTORY
        for q in range(k):
            hist[slot, pos, q] = P[i, q]
        hashes[slot, pos] = h
        if c > 0:
            dist = math.sqrt(best)
            _push_distance(dists, sdists, slot, c - 1, np.float32(dist))
            resid[slot, (c - 1) % FLAGS] = (dist - nn_mu[n_hist]) / nn_sd[n_hist]
        fpos = c % FLAGS
        low = 1 if conf[i] < conf_low else 0
        sv = S[i]
        flags[slot, fpos] = dup | (low << 1)
        surp[slot, fpos] = sv
        # what the model's whole population looked like when this query came in: the
        # client is compared with its contemporaries, not only with the baseline
        exp_low[slot, fpos] = p_grid[0]
        exp_surp[slot, fpos] = surp_mu
        if pop_meta[1] >= POPULATION // 4:
            fill = pop_meta[1]
            exp_low[slot, fpos] = max(p_grid[0], pop_meta[2] / fill)
            exp_surp[slot, fpos] = max(surp_mu, pop_sums[0] / fill)
        if pop_meta[4] >= POP_SHORT:  # the last few hundred events: no lag at a sudden shift
            exp_low[slot, fpos] = max(exp_low[slot, fpos], pop_meta[7] / POP_SHORT)
            exp_surp[slot, fpos] = max(exp_surp[slot, fpos], pop_sums[2] / POP_SHORT)
        # the model's recent traffic, whoever sent it: is this query close to it?
        g_n = pop_meta[4] if pop_meta[4] < GLOBAL else GLOBAL
        kg = k if k < GLOBAL_DIMS else GLOBAL_DIMS
        gbest = _nearest_sq(P, i, g3, 0, g_n, kg)
        close = 1 if g_n == GLOBAL and math.sqrt(gbest) < close_thr else 0
        gp = pop_meta[4] % GLOBAL
        for q in range(kg):
            g_hist[gp, q] = P[i, q]
        pop_meta[4] += 1
        # population window (all clients of the model), and its most recent POP_SHORT
        pp = pop_meta[0]
        if pop_meta[4] - 1 >= POP_SHORT:
            old = (pp - POP_SHORT) % POPULATION
            pop_sums[2] -= pop_surp[old]
            pop_meta[7] -= pop_low[old] & 1
        pop_sums[2] += sv
        pop_meta[7] += low
        if pop_meta[1] == POPULATION:
            pop_sums[0] -= pop_surp[pp]
            pop_sums[1] -= pop_surp[pp] * pop_surp[pp]
            pop_meta[2] -= pop_low[pp] & 1
            pop_meta[3] -= pop_low[pp] >> 1
        else:
            pop_meta[1] += 1
        pop_surp[pp] = sv
        pop_low[pp] = low | (close << 1)
        pop_key[pp] = keys_in[i]
        pop_sums[0] += sv
        pop_sums[1] += sv * sv
        pop_meta[2] += low
        pop_meta[3] += close
        pop_meta[0] = (pp + 1) % POPULATION
        pop_meta[5] += 1
        if (pop_meta[1] == POPULATION and pop_meta[5] >= SYBIL_EVERY
                and t - pop_meta[6] >= report_interval):
            pop_meta[5] = 0
            if pop_meta[3] > thr_close:
                pop_meta[6] = t
                rows[m_out] = i
                sig[m_out] = 5
                stat[m_out] = pop_meta[3]
                thr[m_out] = thr_close
                span[m_out] = POPULATION
                m_out += 1
        c += 1
        nq[slot] = c
        if c < MIN_QUERIES or c % TEST_EVERY != 0 or t - last_report[slot] < report_interval:
            continue
        m = c if c < FLAGS else FLAGS
        n_dup = 0
        n_low = 0
        s_sum = 0.0
        for r in range(m):
            f = flags[slot, r]
            n_dup += f & 1
            n_low += (f >> 1) & 1
            s_sum += surp[slot, r]
        s_mean = s_sum / m
        mu_ref, sd_ref, prate = 0.0, surp_sd, 0.0
        for r in range(m):
            mu_ref += exp_surp[slot, r]
            prate += exp_low[slot, r]
        mu_ref /= m
        prate /= m
        if pop_meta[1] >= POPULATION // 4:
            fill = pop_meta[1]
            pm = pop_sums[0] / fill
            sd_ref = max(sd_ref, math.sqrt(max(pop_sums[1] / fill - pm * pm, 0.0)))
        # binomial threshold at the mean contemporaneous rate: conservative, since a
        # Poisson-binomial count varies less than a binomial with the same mean
        row = 0
        while row < p_grid.shape[0] - 1 and p_grid[row] < prate:
            row += 1
        s_thr = mu_ref + max(z_alpha * sd_ref / math.sqrt(m), SURPRISAL_FLOOR * d)
        fired = -1
        value = 0.0
        limit = 0.0
        if n_dup > thr_dup[m]:
            fired, value, limit = 0, n_dup, thr_dup[m]
        elif n_low > thr_low[row, m]:
            fired, value, limit = 1, n_low, thr_low[row, m]
        elif s_mean > s_thr:
            fired, value, limit = 2, s_mean, s_thr
        else:
            mr = c - 1 if c - 1 < FLAGS else FLAGS
            r_sum = 0.0
            for r in range(mr):
                r_sum += resid[slot, r]
            zc = r_sum / math.sqrt(mr)
            if zc < -z_nn:  # only "too close": wide scanning is out_of_distribution's job
                fired, value, limit = 3, zc, -z_nn
        if fired < 0 and c - 1 >= PRADA_MIN:
            nd = c - 1 if c - 1 < DISTANCES else DISTANCES
            for r in range(nd):  # kept sorted query by query: no sort per test
                buf[r] = sdists[slot, r]
            srt = buf[:nd]
            w = shapiro_w(srt, prada_a[nd - PRADA_MIN, :nd])
            lw = math.log(max(1.0 - w, 1e-12))
            zw = (lw - prada_mu) / prada_sd
            if zw > z_alpha:
                fired, value, limit = 4, w, 1.0 - math.exp(prada_mu + z_alpha * prada_sd)
        if fired >= 0:
            last_report[slot] = t
            rows[m_out] = i
            sig[m_out] = fired
            span[m_out] = m
            stat[m_out] = value
            thr[m_out] = limit
            m_out += 1
    return rows[:m_out], sig[:m_out], stat[:m_out], thr[:m_out], span[:m_out]


def binomial_upper(m: int, p: float, alpha: float) -> int:
    """Largest count a Binomial(m, p) reaches with probability above ``alpha``.

    A count strictly above the returned value has probability at most ``alpha``.
    """
    p = min(max(p, 1e-12), 1 - 1e-12)
    pmf = (1 - p) ** m
    cdf = pmf
    k = 0
    while 1.0 - cdf > alpha and k < m:
        pmf *= (m - k) / (k + 1) * p / (1 - p)
        k += 1
        cdf += pmf
    return k


class ExtractionCalibration:
    """Baseline-derived constants of the extraction kernel (computed once per profile)."""

    def __init__(self, profile: Profile, cfg: DetectorConfig) -> None:
        f = profile.features
        d = profile.n_features
        self.mean = np.asarray(f.mean, dtype=np.float64)
        std = np.asarray(f.std, dtype=np.float64)
        self.inv_std = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 1.0)
        rng = np.random.default_rng(d * 7919 + 17)
        k = min(PROJ, d)
        self.proj = rng.normal(0.0, 1.0 / math.sqrt(k), (d, k)) if d > PROJ else np.eye(d)
        self.edges = f.edges_array()
        self.logp = _bin_surprisal(self.edges, f.cdf_array(), std, profile.n_ref)
        self.cut = BinEdges(self.edges)
        self.alpha = alpha_per_check(TEST_EVERY, cfg.budget_events, len(SIGNALS))
        self.z_alpha = normal_upper(self.alpha)
        conf_edges = profile.summaries
        self.conf_low = _quantile_from_bins(conf_edges.edges[0], conf_edges.cdf[0],
                                            LOW_CONF_QUANTILE)
        self.p_low = _share_below(conf_edges.edges[0], conf_edges.cdf[0], self.conf_low)
        sample = profile.sample_rows()
        self.p_dup = _duplicate_rate(sample, self.mean, self.inv_std)
        surp = surprisal_many(self.cut.bins(sample), self.logp)
        self.surp_mu, self.surp_sd = float(surp.mean()), float(max(surp.std(), 1e-9))
        self.thr_dup = np.array([binomial_upper(m, self.p_dup, self.alpha)
                                 for m in range(FLAGS + 1)], dtype=np.float64)
        self.p_grid = np.geomspace(self.p_low, 1.0, P_GRID)
        self.thr_low = np.array([[binomial_upper(m, p, self.alpha) for m in range(FLAGS + 1)]
                                 for p in self.p_grid], dtype=np.float64)
        self.prada_a = np.zeros((DISTANCES - PRADA_MIN + 1, DISTANCES))
        for nd in range(PRADA_MIN, DISTANCES + 1):
            self.prada_a[nd - PRADA_MIN, :nd] = shapiro_coefficients(nd)
        self.nn_mu, self.nn_sd = np.zeros(HISTORY + 1), np.ones(HISTORY + 1)
        self.prada_mu, self.prada_sd = self._simulate_benign(sample, rng)
        self.close_thr, self.thr_close = self._close_calibration(sample, rng, cfg)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; a checkpoint from before the shared binning gets its edges object."""
        self.__dict__.update(state)
        if "cut" not in state:
            self.cut = BinEdges(self.edges)

    def query_features(self, X: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, ...]:
        """:func:`query_features` of the rows ``X`` with baseline bins ``B``."""
        return query_features(np.ascontiguousarray(X, dtype=np.float32), B, self.mean,
                              self.inv_std, self.proj, self.logp, QUANT_STEP)

    def _close_calibration(self, sample: np.ndarray, rng: np.random.Generator,
                           cfg: DetectorConfig) -> tuple[float, float]:
        """Distance under which a query counts as close to the model's recent traffic.

        It is the CLOSE_QUANTILE of benign distances to the GLOBAL previous queries, so a
        benign window of POPULATION events holds Binomial(POPULATION, CLOSE_QUANTILE) close
        queries; the count threshold follows from the budget. A campaign spread over many
        client ids (sybil) that queries around the same points piles up close queries.
        """
        if len(sample) <= GLOBAL + 50:
            return 0.0, float(POPULATION)
        dists = []
        for _ in range(CLOSE_SHUFFLES):
            P = ((sample[rng.permutation(len(sample))] - self.mean) * self.inv_std) @ self.proj
            P = P[:, :GLOBAL_DIMS]
            dists += [float(np.sqrt(((P[i - GLOBAL:i] - P[i]) ** 2).sum(axis=1).min()))
                      for i in range(GLOBAL, len(P))]
        d = np.asarray(dists)
        close_thr = float(np.quantile(d, CLOSE_QUANTILE))
        # Upper 3-sigma bound on the benign close share (the sample is finite and clustered
        # data makes it vary), and a normal tail on the window count with its variance
        # widened x1.3 for the overdispersion of overlapping windows.
        p = float(np.mean(d < close_thr))
        p_ucb = min(1.0, p + 3.0 * math.sqrt(p * (1 - p) / len(d)))
        alpha = alpha_per_check(SYBIL_EVERY, cfg.budget_events, 1)
        mean = POPULATION * p_ucb
        sd = math.sqrt(1.3 * POPULATION * p_ucb * (1 - p_ucb))
        return close_thr, mean + normal_upper(alpha) * sd

    def _simulate_benign(self, sample: np.ndarray, rng: np.random.Generator
                         ) -> tuple[float, float]:
        """Calibrate the distance signals on simulated benign clients drawn from the baseline.

        Sets the mean and spread of the nearest-neighbour distance for each history length
        (``nn_mu``, ``nn_sd``) and returns those of ln(1 - W) for the PRADA test.
        """
        n_clients, per_client = SIM_CLIENTS, DISTANCES + 1
        per_client = min(per_client, len(sample))
        idx = np.concatenate([rng.choice(len(sample), per_client, replace=False)
                              for _ in range(n_clients)])
        X = sample[idx].astype(np.float32)
        P = (((X - self.mean) * self.inv_std) @ self.proj).reshape(n_clients, per_client, -1)
        D = _nn_sequences(P)  # (clients, per_client - 1): distance at history 1, 2, ...
        hist_len = np.minimum(np.arange(1, D.shape[1] + 1), HISTORY)
        for h in range(1, HISTORY + 1):
            vals = D[:, hist_len == h].ravel()
            if vals.size == 0:
                vals = D[:, -1]
            self.nn_mu[h] = vals.mean()
            self.nn_sd[h] = max(vals.std(), 1e-6 + 1e-3 * vals.mean())
        # Successive distances share most of their history, so they are positively
        # correlated and a mean of m of them varies more than 1/m. Measure that inflation on
        # the simulated clients at every window length the test uses and widen the test by
        # the largest; x1.3 covers the sampling error of a variance estimated from
        # SIM_CLIENTS clients (its one-sided 99 % bound).
        R = (D - self.nn_mu[hist_len]) / self.nn_sd[hist_len]
        infl = [float(np.var(R[:, :m].mean(axis=1) * math.sqrt(m)))
                for m in (16, 24, 32, 48, 64, 96, 128) if m <= R.shape[1]]
        self.nn_inflation = 1.3 * max(max(infl, default=1.0), 1.0)
        keys = np.repeat(np.arange(1, n_clients + 1, dtype=np.int64), per_client)
        ts = np.arange(len(X), dtype=np.int64)
        state = _ExtractionState(256, X.shape[1])
        conf = np.ones(len(X), dtype=np.float32)
        never = np.full(FLAGS + 1, 1e9)
        extraction_update(
            keys, ts, *self.query_features(X, self.cut.bins(X)), conf, -1.0, never,
            np.full((1, FLAGS + 1), 1e9), 0.0, 1.0, self.nn_mu,
            self.nn_sd, 1e9, 1e9, self.prada_a,
            0.0, 1.0, 0, *state.arrays(), np.ones(1), *state.population(), 0.0,
            1e9, state.g_hist, state.pop_key,
        )
        lws = []
        for s in range(n_clients):
            slot = np.flatnonzero(state.keys == s + 1)[0]
            for nd in (PRADA_MIN, min(DISTANCES, per_client - 1)):
                if nd < PRADA_MIN:
                    continue
                dd = np.sort(state.dists[slot, :nd].astype(np.float64))
                w = shapiro_w(dd, self.prada_a[nd - PRADA_MIN, :nd])
                lws.append(math.log(max(1.0 - w, 1e-12)))
        if not lws:
            return -3.0, 1.0
        arr = np.asarray(lws)
        # x1.3 on the spread: the one-sided 99 % bound of a spread estimated from
        # SIM_CLIENTS clients, since the test extrapolates far into the tail.
        return float(arr.mean()), 1.3 * float(max(arr.std(), 0.05))


def _nn_sequences(P: np.ndarray) -> np.ndarray:
    """For ``(clients, queries, dims)``: each query's distance to its nearest of the
    client's HISTORY previous queries, from the second query on."""
    out = np.empty((P.shape[0], P.shape[1] - 1))
    for i in range(1, P.shape[1]):
        prev = P[:, max(0, i - HISTORY):i]
        out[:, i - 1] = np.sqrt(((prev - P[:, i:i + 1]) ** 2).sum(axis=2).min(axis=1))
    return out


def _bin_surprisal(edges: np.ndarray, cdf: np.ndarray, std: np.ndarray, n_ref: int
                   ) -> np.ndarray:
    """-log of the baseline density in each bin: share over width.

    Quantile bins all hold about the same share, so it is their width that tells dense
    from sparse regions. The open bins beyond the reference range get a width of one
    standard deviation and the smallest share the reference can resolve; widths are
    floored at 1e-3 standard deviations so discrete values do not blow up.
    """
    d, n_e = edges.shape
    shares = np.diff(np.concatenate([np.zeros((d, 1)), cdf], axis=1), axis=1)
    scale = np.where(std > 0, std, 1.0)[:, None]
    widths = np.repeat(scale, n_e + 1, axis=1)
    with np.errstate(invalid="ignore"):
        inner = np.diff(edges, axis=1)  # width of bins 1..E-1 (inf/nan past each row's end)
    finite = np.isfinite(inner)
    widths[:, 1:n_e][finite] = inner[finite]
    widths = np.maximum(widths, 1e-3 * scale)
    logp = -np.log(np.maximum(shares, 0.5 / n_ref) / widths)
    # Values beyond the reference range count as rare as the sparsest inner bin, x2: one
    # such value must not outweigh a hundred ordinary queries.
    n_edges = np.isfinite(edges).sum(axis=1)
    bins = np.arange(n_e + 1)[None, :]
    inner = (bins >= 1) & (bins < n_edges[:, None])
    inner_max = np.where(inner, logp, -np.inf).max(axis=1)
    cap = np.where(np.isfinite(inner_max), inner_max + math.log(2.0), logp.max(axis=1))
    return np.minimum(logp, cap[:, None])


def _quantile_from_bins(edges: list[float], cdf: list[float], q: float) -> float:
    """The bin edge at which the baseline's cumulative share first reaches ``q``."""
    for e, c in zip(edges, cdf, strict=False):
        if c >= q:
            return float(e)
    return float(edges[-1]) if edges else 0.0


def _share_below(edges: list[float], cdf: list[float], v: float) -> float:
    share = 0.0
    for e, c in zip(edges, cdf, strict=False):
        if e <= v:
            share = c
    return max(share, 1e-3)


def _duplicate_rate(sample: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> float:
    """Chance that a benign query repeats the grid cell of one of HISTORY earlier queries."""
    Z = (sample - mean) * inv_std
    _, counts = np.unique(grid_hashes(Z, QUANT_STEP), return_counts=True)
    n = len(sample)
    pair = (float((counts * (counts - 1)).sum()) + 1.0) / (n * (n - 1))
    return min(1.0, HISTORY * pair)


class _ExtractionState:
    """The per-client arrays, preallocated for ``capacity`` clients."""

    def __init__(self, capacity: int, d: int) -> None:
        self.capacity, self.d = capacity, d
        self.reset()

    def reset(self) -> None:
        cap, d = self.capacity, self.d
        self.keys = np.zeros(cap, dtype=np.int64)
        self.last_seen = np.zeros(cap, dtype=np.int64)
        self.last_report = np.zeros(cap, dtype=np.int64)
        self.nq = np.zeros(cap, dtype=np.int64)
        self.hist = np.zeros((cap, HISTORY, min(PROJ, d)), dtype=np.float32)  # query-major
        self.hashes = np.zeros((cap, HISTORY), dtype=np.int64)
        self.dists = np.zeros((cap, DISTANCES), dtype=np.float32)
        self.sdists = np.zeros((cap, DISTANCES), dtype=np.float32)  # the same, sorted
        self.flags = np.zeros((cap, FLAGS), dtype=np.uint8)
        self.surp = np.zeros((cap, FLAGS), dtype=np.float32)
        self.resid = np.zeros((cap, FLAGS), dtype=np.float32)
        self.exp_low = np.zeros((cap, FLAGS), dtype=np.float32)
        self.exp_surp = np.zeros((cap, FLAGS), dtype=np.float32)
        self.fsum = np.zeros((cap, d), dtype=np.float32)
        self.fsq = np.zeros((cap, d), dtype=np.float32)
        self.stats = np.zeros(1, dtype=np.int64)
        self.pop_surp = np.zeros(POPULATION, dtype=np.float64)
        self.pop_low = np.zeros(POPULATION, dtype=np.int64)
        # position, fill, low-confidence count, close count, queries seen, events since the
        # model-level test, event time of its last report, low-confidence count (short)
        self.pop_meta = np.array([0, 0, 0, 0, 0, 0, -(1 << 62), 0], dtype=np.int64)
        self.pop_key = np.zeros(POPULATION, dtype=np.int64)
        self.g_hist = np.zeros((GLOBAL, min(GLOBAL_DIMS, d)), dtype=np.float32)
        # surprisal sum and sum of squares over the window, surprisal sum over the short one
        self.pop_sums = np.zeros(3, dtype=np.float64)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickle; a checkpoint from before the sorted distances gets them rebuilt."""
        self.__dict__.update(state)
        # Earlier versions kept the projected queries dimension-major (the last axis was
        # the history); the projection has at most PROJ < HISTORY (GLOBAL_DIMS < GLOBAL)
        # dimensions, so the layout is told by the shape.
        if self.hist.shape[-1] == HISTORY and self.hist.shape[1] != HISTORY:
            self.hist = np.ascontiguousarray(self.hist.transpose(0, 2, 1))
        if self.g_hist.shape[-1] == GLOBAL and self.g_hist.shape[0] != GLOBAL:
            self.g_hist = np.ascontiguousarray(self.g_hist.T)
        if "sdists" not in state:
            self.sdists = np.zeros_like(self.dists)
            for slot in np.flatnonzero(self.nq > 1):
                nd = min(int(self.nq[slot]) - 1, DISTANCES)
                self.sdists[slot, :nd] = np.sort(self.dists[slot, :nd])

    def population(self) -> tuple[np.ndarray, ...]:
        return self.pop_surp, self.pop_low, self.pop_meta, self.pop_sums

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.keys, self.last_seen, self.last_report, self.nq, self.hist, self.hashes,
                self.dists, self.sdists, self.flags, self.surp, self.resid, self.fsum, self.fsq,
                self.stats, self.exp_low, self.exp_surp)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays() + self.population()) + self.g_hist.nbytes + \
            self.pop_key.nbytes


class ExtractionDetector:
    """Per-(model, client) extraction and probing signals against a :class:`Profile`."""

    name = "extraction"

    def __init__(self, profile: Profile, cfg: DetectorConfig) -> None:
        if cfg.extraction_capacity & (cfg.extraction_capacity - 1):
            raise ValueError("extraction_capacity must be a power of two")
        self.profile = profile
        self.cal = ExtractionCalibration(profile, cfg)
        self.state = _ExtractionState(cfg.extraction_capacity, profile.n_features)
        self.report_interval = cfg.extraction_report_interval_ms
        self.budget_events = cfg.budget_events

    @property
    def evictions(self) -> int:
        """Clients evicted from the table so far (a steady rate while clients are still
        active means the table is smaller than the model's active clients)."""
        return int(self.state.stats[0])

    def prepare(self, block: EventBlock) -> None:
        """Compute ahead what :meth:`update` derives from ``block`` alone: client keys and
        :func:`query_features` (a sixth of this detector's time)."""
        block_client_keys(block)
        self._query_features(block)

    def _query_features(self, block: EventBlock) -> tuple[np.ndarray, ...]:
        c = self.cal
        return derived_input(block, "query_features", c, lambda: c.query_features(
            block.X, block_bins(block, self.profile.features, c.cut)))

    def update(self, block: EventBlock) -> list[Detection]:
        c = self.cal
        keys_in = block_client_keys(block)
        rows, sig, stat, thr, span = extraction_update(
            keys_in, block.ts, *self._query_features(block),
            block.confidence, c.conf_low, c.thr_dup, c.thr_low, c.surp_mu, c.surp_sd,
            c.nn_mu, c.nn_sd, c.z_alpha * math.sqrt(c.nn_inflation), c.z_alpha, c.prada_a,
            c.prada_mu, c.prada_sd, self.report_interval,
            *self.state.arrays(), c.p_grid, *self.state.population(), c.close_thr, c.thr_close,
            self.state.g_hist, self.state.pop_key,
        )
        return [self._detection(block, int(r), int(s), float(v), float(t), int(m))
                for r, s, v, t, m in zip(rows, sig, stat, thr, span, strict=True)]

    def _client_view(self, key: int) -> dict[str, Any]:
        st = self.state
        slot = int(np.flatnonzero(st.keys == key)[0])
        n = int(st.nq[slot])
        m = min(n, FLAGS)
        flags = st.flags[slot, :m]
        mean = st.fsum[slot] / max(n, 1)
        spread = np.sqrt(np.maximum(st.fsq[slot] / max(n, 1) - mean**2, 0.0))
        narrow = np.argsort(spread, kind="stable")[:2]
        return {
            "queries_seen": n,
            "recent_queries": m,
            "near_duplicate_share": round(float((flags & 1).mean()), 4) if m else 0.0,
            "low_confidence_share": round(float(((flags >> 1) & 1).mean()), 4) if m else 0.0,
            "mean_surprisal": round(float(st.surp[slot, :m].mean()), 3) if m else 0.0,
            "narrowest_features": [
                {"name": self.profile.features.names[j],
                 "spread_vs_baseline": round(float(spread[j]), 4)} for j in narrow
            ],
        }

    def _sybil_view(self, block: EventBlock) -> dict[str, Any]:
        """Which client ids sent the close queries in the model's window (names when known)."""
        st = self.state
        close = (st.pop_low >> 1) & 1 == 1
        keys, counts = np.unique(st.pop_key[close], return_counts=True)
        names = dict(zip(block_client_keys(block).tolist(), block.client_id.tolist(),
                         strict=True))
        top = np.argsort(-counts, kind="stable")[:10]
        return {
            "clients_with_close_queries": int(len(keys)),
            "top_clients": [{"client_id": names.get(int(keys[i]), f"key:{int(keys[i])}"),
                             "close_queries": int(counts[i])} for i in top],
        }

    def _detection(self, block: EventBlock, row: int, sig: int, value: float,
                   limit: float, recent: int) -> Detection:
        c = self.cal
        signal = SIGNALS[sig]
        t = int(block.ts[row])
        if signal == "sybil":
            view = self._sybil_view(block)
            return Detection(
                detector=self.name, model_id=block.model_id, model_version=block.model_version,
                client_id=None, score=float(value), threshold=float(limit),
                window_start_ms=t, window_end_ms=t, trigger_event_id=str(block.event_id[row]),
                timestamp_ms=t,
                summary=(f"Possible distributed extraction of {block.model_id}@"
                         f"{block.model_version}: {int(value)} of the last {recent} queries sit "
                         f"unusually close to recent traffic, spread over "
                         f"{view['clients_with_close_queries']} client ids."),
                evidence={"signal": signal, "statistic": float(value),
                          "signal_threshold": float(limit), "recent_queries_tested": recent,
                          "population": view,
                          "baseline": {"close_distance": round(c.close_thr, 5),
                                       "close_share": CLOSE_QUANTILE},
                          "calibration": {"budget_events_per_false_alarm": self.budget_events,
                                          "test_every_events": SYBIL_EVERY}},
            )
        client = str(block.client_id[row])
        key = int(block_client_keys(block)[row])
        view = self._client_view(key)
        what = {
            "near_duplicates": f"{int(value)} near-identical queries among its last {recent}",
            "boundary_probing": f"{int(value)} of its last {recent} queries near the "
                                f"decision threshold",
            "out_of_distribution": f"queries far from real traffic (surprisal {value:.1f} vs "
                                   f"{c.surp_mu:.1f})",
            "query_concentration": f"queries much closer to each other than real users' "
                                   f"(z {value:.1f})",
            "query_distance_normality": f"a synthetic query pattern (Shapiro-Wilk W "
                                        f"{value:.3f} below {limit:.3f})",
            "sybil": f"{int(value)} of the model's last {recent} queries sit unusually close "
                     f"to recent queries (benign: at most {int(limit)})",
        }[signal]
        if signal == "query_distance_normality":
            score, threshold = 1.0 - value, 1.0 - limit
        else:
            score, threshold = abs(value), abs(limit)
        return Detection(
            detector=self.name,
            model_id=block.model_id,
            model_version=block.model_version,
            client_id=client,
            score=round(float(score), 6),
            threshold=round(float(threshold), 6),
            window_start_ms=t,
            window_end_ms=t,
            trigger_event_id=str(block.event_id[row]),
            timestamp_ms=t,
            summary=(f"Possible model extraction or probing of {block.model_id}@"
                     f"{block.model_version} by client {client}: {what}."),
            evidence={
                "signal": signal,
                "statistic": round(float(value), 6),
                "recent_queries_tested": recent,
                "signal_threshold": round(float(limit), 6),
                "client": view,
                "baseline": {
                    "near_duplicate_rate": c.p_dup,
                    "low_confidence_rate": round(c.p_low, 4),
                    "low_confidence_below": round(c.conf_low, 4),
                    "mean_surprisal": round(c.surp_mu, 3),
                },
                "calibration": {
                    "alpha_per_test": c.alpha,
                    "budget_events_per_false_alarm": self.budget_events,
                    "test_every_queries": TEST_EVERY,
                },
            },
        )
