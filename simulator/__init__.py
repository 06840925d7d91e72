"""The embedded sample's builder and its seeded shopper simulator (`camenn sample`).

Kept apart from `camenn.preprocessing`, which reads any dataset folder and never needs the simulator.
"""
