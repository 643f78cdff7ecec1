"""Vote aggregation: pure functions over NumPy arrays (no Django), tested alone.

- :mod:`.categorical` -- majority vote (stated tie rule), "any worker" presence, Wawa, one-coin and
  full Dawid-Skene with posteriors.
- :mod:`.clicks` -- instance spotting: clicks of all workers clustered into instances.
- :mod:`.verification` -- accept/reject votes weighted by worker reliability.
- :mod:`.quality` -- worker accuracy from gold items and from Dawid-Skene; approve/reject/block.
- :mod:`.adaptive` -- adaptive redundancy: does an item need another answer?
- :mod:`.io` -- ``task,worker,label`` CSV <-> integer arrays.
"""
from .categorical import (
    METHODS,
    Aggregation,
    aggregate,
    dawid_skene,
    majority_vote,
    one_coin_dawid_skene,
    presence_any,
    vote_counts,
    wawa,
)
from .io import Votes, encode, read_truth, read_votes, write_labels

__all__ = [
    "METHODS", "Aggregation", "aggregate", "dawid_skene", "majority_vote", "one_coin_dawid_skene",
    "presence_any", "vote_counts", "wawa", "Votes", "encode", "read_truth", "read_votes", "write_labels",
]
