"""The sweep engine: grids, chunked sharded execution, resumable storage, orchestration."""
