"""The embedded sample's size (`camenn sample`'s defaults), importable without numpy or PIL for --help.

18,000 clicks: with 6,000 (12 per listing, 30 per shopper) no model we tried, a logistic regression on
the simulator's own features included, beat the prior's log loss on the eval split (README "The embedded
sample").
"""

SEED = 0
NUM_LISTINGS = 480
NUM_MERCHANTS = 40
NUM_SHOPPERS = 200
NUM_EVENTS = 18_000
