"""Batches of one step are joined per model before scoring, with the same incidents."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.synthetic import make_block
from detectors.baseline import Profile
from detectors.block import EventBlock, coalesce
from detectors.client_table import block_client_keys, client_hashes
from schemas.encoders import batch_avro
from streams import pipeline as pipeline_mod
from streams.pipeline import Message, Pipeline


def _batch(b: EventBlock) -> bytes:
    return batch_avro(b.model_id, b.model_version, b.event_id, b.ts, b.client_id,
                      b.prediction, b.X, b.scores)


def test_coalesce_keeps_each_models_order_and_the_cap() -> None:
    a = [make_block(n=300, seed=s, model_id="a", id_prefix=f"a{s}-") for s in range(4)]
    b = [make_block(n=200, seed=s, model_id="b", id_prefix=f"b{s}-") for s in range(2)]
    out = coalesce([a[0], b[0], a[1], a[2], b[1], a[3]], max_events=700)
    assert [(x.model_id, len(x)) for x in out] == [("a", 600), ("a", 600), ("b", 400)]
    joined_a = np.concatenate([x.event_id for x in out if x.model_id == "a"])
    assert joined_a.tolist() == np.concatenate([x.event_id for x in a]).tolist()
    big = make_block(n=900, seed=9)
    assert [len(x) for x in coalesce([big], max_events=100)] == [900]
    assert coalesce([], max_events=100) == []


def _traffic() -> tuple[list[Message], Profile]:
    prof = Profile.build(make_block(n=5000, seed=1))
    benign = make_block(n=4000, seed=2)
    flood = make_block(n=1500, seed=3, n_clients=1, interval_ms=1,
                       start_ms=int(benign.ts[-1]) + 5, id_prefix="fl")
    drifted = make_block(n=4000, seed=4, start_ms=int(flood.ts[-1]) + 5, shift={3: 1.0},
                         id_prefix="dr")
    whole = EventBlock.concat([benign, flood, drifted])
    msgs = [Message("inference-batches", 0, i, _batch(whole.take(slice(s, s + 500))))
            for i, s in enumerate(range(0, len(whole), 500))]
    return msgs, prof


@pytest.mark.parametrize("cap", [1, 2_000, 65_536])
def test_joined_batches_publish_the_same_incidents(monkeypatch: pytest.MonkeyPatch,
                                                   cap: int) -> None:
    msgs, prof = _traffic()

    def published(limit: int) -> tuple[list[tuple], list[int]]:
        monkeypatch.setattr(pipeline_mod, "MERGE_EVENTS", limit)
        p = Pipeline("inference-batches", profiles={prof.key: prof})
        sizes: list[int] = []
        process = p.engine.process

        def counting(block: EventBlock) -> list:
            sizes.append(len(block))
            return process(block)

        p.engine.process = counting  # type: ignore[method-assign]
        recs = p.step(msgs).incidents
        return [(r["incident_id"], r["status"], r["count"], r["detector"]) for r in recs], sizes

    one_by_one, sizes_one = published(1)
    joined, sizes = published(cap)
    assert joined == one_by_one
    assert {r[3] for r in joined} >= {"drift", "query_flood"}
    assert sizes_one == [500] * len(msgs)
    assert sum(sizes) == 500 * len(msgs)
    assert max(sizes) <= max(cap, 500)
    if cap > 500:
        assert len(sizes) == -(-500 * len(msgs) // (cap // 500 * 500))


def test_joined_and_taken_blocks_keep_their_client_keys() -> None:
    a, b = make_block(n=300, seed=1), make_block(n=200, seed=2, n_clients=7)
    for x in (a, b):
        block_client_keys(x)
    joined = EventBlock.concat([a, b])
    assert joined.client_keys is not None
    assert joined.client_keys.tolist() == client_hashes(
        joined.model_id, joined.model_version, joined.client_id).tolist()
    part = joined.take(joined.ts % 3 == 0)
    assert part.client_keys.tolist() == client_hashes(
        part.model_id, part.model_version, part.client_id).tolist()
    # a block without keys makes the join compute them on first use
    assert EventBlock.concat([a, make_block(n=10, seed=3)]).client_keys is None
