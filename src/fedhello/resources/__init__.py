"""What training a layer set costs a client, in bytes and relative time.

Capability groups can be given as memory budgets instead of layer counts; this package
holds the memory units they are written in (`memory_units`), the cost model that prices
any layer set (`cost_model`, plain numbers: strategies use it without torch) and the
probe that measures the model once per model and input shape (`probe`).
"""
