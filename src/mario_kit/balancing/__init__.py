"""Balancing: strategies that rebalance action classes while collecting, and post-hoc weights."""
