"""User-level central differential privacy for heterogeneous layer sets (DP-FedAvg).

`clipping`: bound a client's whole update; `accounting`: ε of a run with Google's
dp-accounting library; `mechanism`: the server's noised per-tensor aggregation and the
adaptive clip norm; `validation`: the settings DP refuses. The README's Privacy section
states what is guaranteed and why each choice keeps the guarantee.
"""
