"""Outside crowds: publishing items on a crowd market, taking the work back, paying for it.

`platforms.py` holds the small adapter interface every platform implements and the registry of
platforms; `mturk.py` (Amazon Mechanical Turk through boto3) and `link.py` (platforms that send
workers to a link, Prolific-style) implement it; `services/` runs the workflow the same way for
every platform: publish, synchronise, settle (pay or refuse, block spammers), close.
"""
