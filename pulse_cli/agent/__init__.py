"""The local agent: account, outbox push, shape pull into the replica, the local view, the scheduler."""
