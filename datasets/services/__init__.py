"""Services of the datasets app: every write to its models goes through one of these modules."""
