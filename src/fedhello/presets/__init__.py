"""Shipped presets (YAML files in this package) and the switches that turn fedhello's
corrections of the reference code off.

`REFERENCE_SWITCHES`, added to a `paper-*` preset (which already carries the reference's
uniform weighting, LoRA dropout 0.1 and Fisher rounds), reproduce the reference code's
behaviour switch by switch; README "Differences from the reference code" explains each.
"""

REFERENCE_SWITCHES: tuple[str, ...] = (
    "training.head=reset",  # every client trains the never-updated initial head and throws it away
    "fisher.objective=logit",  # differentiate the raw true-class logit
    "allocation.params.mode=refresh_only",  # Fisher weights only in refresh rounds, RGD otherwise
    "allocation.params.tier_order=kmeans_label",  # unordered k-means labels index the tier weights
    "fisher.proxy_size=4",  # its Fisher "mean" covers len(DataLoader) = ceil(100 / 32) = 4 proxy samples
    "groups.assignment=index",  # capability groups by client id
)
