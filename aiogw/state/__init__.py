"""State shared across replicas through Redis (buckets, breakers, health windows)."""
