"""The fleet's records in Redis and the verdicts drawn from them."""
