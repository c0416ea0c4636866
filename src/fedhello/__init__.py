"""fedhello: federated LoRA fine-tuning with heterogeneous layer allocation (Fed-HeLLo)."""

__version__ = "0.1.0"
