"""A shard handed away and back keeps its state and its kernel time is counted once."""

from __future__ import annotations

from benchmarks.synthetic import block_to_events, make_block
from detectors.baseline import Profile
from schemas.encoders import event_json
from streams.pipeline import Message, Pipeline


def test_adopted_shard_is_counted_once() -> None:
    prof = Profile.build(make_block(n=3000, seed=1))
    events = block_to_events(make_block(n=2000, seed=2))
    p = Pipeline("inference-batches", profiles={prof.key: prof})
    p.step([Message("inference-events", 0, i, event_json(e)) for i, e in enumerate(events)])
    before = sum(p.kernel_seconds().values())
    assert before > 0
    shard, offsets = p.shards[0], p.shard_offsets(0)
    assert offsets == {("inference-events", 0): len(events)}

    p.drop_shard(0)
    assert 0 not in p.shards and p.shard_offsets(0) == {}
    assert sum(p.kernel_seconds().values()) == before  # retired, still counted

    p.adopt_shard(0, shard, offsets)
    assert p.shards[0] is shard and p.shard_offsets(0) == offsets
    assert abs(sum(p.kernel_seconds().values()) - before) < 1e-9
    assert p.stats()["events"] == len(events)
