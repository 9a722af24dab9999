"""Whole data sets, streamed shard by shard, resumable, split across the processes of `torchrun`:
`explain_dataset` (maps), `bench_dataset` (the leaderboard), `sanity_dataset` (randomisation tests), all
on one sharded-run core (`stream.core.run_shards`)."""

from attnscope.data.inputs import FolderImages, NamedData
from attnscope.stream.bench import bench_dataset
from attnscope.stream.core import MANIFEST, RUN, STREAM_FORMAT, Sharded, run_shards
from attnscope.stream.explain import COMMAND, MAPS, explain_dataset, shard_name
from attnscope.stream.sanity import sanity_dataset
from attnscope.stream.settings import Streaming

__all__ = ["COMMAND", "MANIFEST", "MAPS", "RUN", "STREAM_FORMAT", "FolderImages", "NamedData", "Sharded", "Streaming",
           "bench_dataset", "explain_dataset", "run_shards", "sanity_dataset", "shard_name"]
