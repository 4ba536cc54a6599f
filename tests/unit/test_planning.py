import re

import pytest

from shardflow.core.planning import assign_shards, job_id_for_run, processing_job_name

SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@pytest.mark.parametrize(("objects", "instances"), [(10, 3), (3, 3), (2, 5), (1000, 7), (0, 2)])
def test_sharded_by_s3_key_gives_every_object_to_exactly_one_instance(objects, instances):
    keys = [f"in/part-{i:05d}.parquet" for i in range(objects)]
    shards = assign_shards(keys, instances)
    assert len(shards) == instances
    assigned = [key for shard in shards for key in shard]
    assert sorted(assigned) == keys  # every object once, none invented
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1  # about 1/N each
    assert all(shard == sorted(shard) for shard in shards)


def test_sharding_needs_an_instance():
    with pytest.raises(ValueError, match="instance_count"):
        assign_shards(["a"], 0)


def test_job_ids_are_stable_per_run_and_distinct_across_runs():
    first = job_id_for_run("demo", "shardflow_demo", "scheduled__2026-01-01")
    assert first == job_id_for_run("demo", "shardflow_demo", "scheduled__2026-01-01")
    assert first != job_id_for_run("demo", "shardflow_demo", "scheduled__2026-01-02")


def test_processing_job_names_follow_sagemaker_rules_and_differ_per_attempt():
    job_id = job_id_for_run("a" * 40, "shardflow_" + "a" * 40, "manual__2026-01-01T00:00:00+00:00")
    names = [processing_job_name(job_id, attempt) for attempt in (1, 2, 10)]
    assert len(set(names)) == 3
    for name in names:
        assert len(name) <= 63
        assert SAGEMAKER_NAME.match(name), name
    assert names[0] == processing_job_name(job_id, 1)
