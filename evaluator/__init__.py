"""The evaluator: the grid of (model, defense, landscape, budget, attack) cells, its shards and their
runs, the aggregated results and the report."""
