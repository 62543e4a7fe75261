"""Detector settings, with the reason for every default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorConfig:
    """Knobs shared by the detection core, the worker and replay.

    Thresholds are not here: each detector derives its own from the baseline and
    ``budget_events`` (see :mod:`detectors.calibration`).
    """

    #: Benign events per model (or per client for per-client detectors) between two
    #: false alarms of one detector. One per million keeps a SIEM quiet.
    budget_events: float = 1_000_000.0
    #: Events in the drift / confidence sliding window. 1000 resolves a 0.1 shift in a
    #: feature's CDF at a one-per-million false-alarm budget.
    window: int = 1000
    #: Events between two tests of the window: bounds kernel cost and detection lag. Also the
    #: shortest window of the whitened mean-shift test (windows double from it up to
    #: ``window``), the length at which its scaled-gamma calibration was checked to hold.
    step: int = 50
    #: Quantile bins per feature in baselines.
    bins: int = 16
    #: Events of a model used as its baseline when no profile was loaded.
    warmup_events: int = 2000
    #: Flood time scales (ms): bursts, short floods, sustained floods.
    flood_scales_ms: tuple[int, ...] = (1_000, 10_000, 60_000)
    #: Slots of the per-(model, client) rate table; 92 bytes each (3 scales). Least recently seen
    #: clients are evicted beyond it.
    client_capacity: int = 1 << 18
    #: Clients tracked by the extraction detector (power of two); about 5.5 kB + 8 bytes
    #: per feature each. Least recently seen clients are evicted beyond it.
    extraction_capacity: int = 1 << 13
    #: An extraction detection per client is reported at most this often (event time).
    extraction_report_interval_ms: int = 10_000
    #: A flood detection per client is reported at most this often (event time).
    flood_report_interval_ms: int = 1_000
    #: Minimum event-time gap between two records of one ongoing incident.
    cooldown_ms: int = 30_000
    #: An incident resolves once no detection was seen for this long (event time).
    resolve_after_ms: int = 60_000
    #: Events may arrive this late (event time) before windows treat them as closed.
    allowed_lateness_ms: int = 5_000
    #: Threads that run one model's detectors: 2 runs the extraction detector beside the
    #: others (the kernels release the GIL), so a worker uses two cores; 1 runs them in
    #: turn. Detections are the same either way.
    detector_threads: int = 2
