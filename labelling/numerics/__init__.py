"""Pure numpy numerics: uncertainty, aggregation, agreement and labeller reliability."""
