"""The Hugging Face `datasets` library, imported only when a hub dataset is asked for.

It is an optional extra (`fedhello[hub]`): the offline datasets and the tests never need it.
"""

from __future__ import annotations

from fedhello.errors import ConfigError


def import_hub_datasets():
    """The `datasets` module, or a ConfigError on `data.dataset` saying how to install it."""
    try:
        import datasets as hf_datasets
    except ImportError:
        raise ConfigError("config field 'data.dataset': hub datasets need `pip install fedhello[hub]`") from None
    return hf_datasets
