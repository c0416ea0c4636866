"""The final global adapter in PEFT's own format, loadable with `PeftModel.from_pretrained`.

`adapter/` holds peft's `adapter_config.json` and `adapter_model.safetensors` (the LoRA
factors) and, where the task has a head trained alongside LoRA (classifier, pooler),
`head.safetensors` with those tensors under the base model's own parameter names, to be
loaded into the base model before wrapping it:

    base.load_state_dict(safetensors.torch.load_file("adapter/head.safetensors"), strict=False)
    model = PeftModel.from_pretrained(base, "adapter")
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file

from fedhello.models.federated_model import FederatedModel
from fedhello.tensor_state import TensorState

HEAD_FILE = "head.safetensors"


def base_parameter_name(name: str) -> str:
    """`base_model.model.classifier.weight` -> `classifier.weight`: the name in the model peft wraps."""
    prefix = "base_model.model."
    return name.removeprefix(prefix)


def save_peft_adapter(federated: FederatedModel, global_state: TensorState, folder: Path) -> None:
    """Load `global_state` into the model and write it with peft's `save_pretrained` (+ the head).

    Only the model's own LoRA and head tensors are exported; other entries a strategy keeps
    in its global state (such as full-size updates) are not part of a LoRA adapter.
    """
    names = set(federated.exchanged_names)
    federated.load_state({name: tensor for name, tensor in global_state.items() if name in names})
    federated.model.save_pretrained(str(folder), safe_serialization=True)
    head = {
        base_parameter_name(name): global_state[name].detach().contiguous().cpu()
        for name in federated.head_names
        if name in global_state
    }
    if head:
        save_file(head, folder / HEAD_FILE)
