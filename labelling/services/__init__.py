"""Services: every write to the labelling domain goes through one of these functions."""
