"""Shardflow."""
