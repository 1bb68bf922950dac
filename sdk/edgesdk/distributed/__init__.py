"""Scale-out: many builds on a process pool or a Ray cluster (executors), artifacts run and timed on
boards over TVM RPC (boards)."""
