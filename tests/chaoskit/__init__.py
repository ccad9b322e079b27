"""The chaos kit: fault injection, ground truth, history recording and the ten invariant checkers.

Shared by tests/integration/test_chaos.py (the CI chaos tier) and scripts/chaos.py (the long runs).
The plan is shared/TESTING.md; the guarantees checked are DESIGN.md §3.

- `harness.ChaosCluster`: tests/cluster.py's Cluster, each node under its own test uid, with
  `isolate` / `partition` / `heal` (iptables on `lo`), `clock_offset` (libfaketime),
  `damage_journal`, membership helpers, and a status observer (leaders, terms, CPU, memory).
- `groundtruth`: the task jobs run (`gt_task.py`, one fsynced JSON line per start/end) and readers
  for it and for the HTTP sink.
- `history`: the admin-op log (ok / failed / indeterminate), collection of run records and digests.
- `workload`: the jobs and the concurrent admin clients.
- `checkers`: the ten invariants as pure functions over a recorded `History`.
- `figures`: the figures every chaos run reports.
"""
