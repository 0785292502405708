"""Convert the authors' released Keras weights (`KNOWN_Conv.h5`, `KNOWN_FC.h5`, `KNOWN_Bias.h5`) to a
`KnowHyperModel`.

The files are Keras `save_weights` HDF5 files: one group per `Dense` layer, named `dense`, `dense_1`, ...,
`dense_12` in creation order, each holding `kernel:0` of shape `(in, out)` and `bias:0`. Layers 0-5 are the value
branch (input, squeeze, additive, coefficient, exponent, output), 6-11 the same roles in the difference branch, 12
the head. A PyTorch `Linear` weight is the transposed kernel. Needs `h5py` (`pip install hf-know[keras]`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .hypermodel import KINDS, KnowHyperModel, KnownNet

BRANCH_ROLES = ("inp", "squeeze", "additive", "coefficient", "exponent", "out")


def keras_layer_order(net: KnownNet) -> list[tuple[str, torch.nn.Linear]]:
    """`(keras group name, layer)` pairs in the order Keras created the layers."""
    layers = [getattr(net.values, role) for role in BRANCH_ROLES]
    layers += [getattr(net.differences, role) for role in BRANCH_ROLES]
    layers.append(net.head)
    return [(f"dense_{i}" if i else "dense", layer) for i, layer in enumerate(layers)]


def _read_dense(group, path: str) -> tuple[np.ndarray, np.ndarray]:
    """`(kernel, bias)` of one Keras Dense layer group, wherever `save_weights` nested them."""
    names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
    if not names:
        names = []
        group.visit(lambda name: names.append(name) if name.endswith((":0",)) else None)
    arrays = {name.rsplit("/", 1)[-1]: np.asarray(group[name]) for name in names}
    if set(arrays) != {"kernel:0", "bias:0"}:
        raise ValueError(f"{path}: expected the arrays kernel:0 and bias:0, found {sorted(arrays)}.")
    return arrays["kernel:0"], arrays["bias:0"]


def load_keras_known(path: str | os.PathLike, net: KnownNet) -> None:
    """Copy one released KNOWN HDF5 file into `net` in place, checking every layer's name and shape."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("Reading Keras HDF5 weights needs h5py: pip install 'hf-know[keras]'.") from error
    with h5py.File(path, "r") as file:
        root = file.get("model_weights", file)
        for group_name, layer in keras_layer_order(net):
            if group_name not in root:
                raise ValueError(f"{path}: no layer group {group_name!r}; expected dense ... dense_12 (KNOWN layout).")
            kernel, bias = _read_dense(root[group_name], f"{path}:{group_name}")
            expected = (layer.in_features, layer.out_features)
            if kernel.shape != expected or bias.shape != (layer.out_features,):
                raise ValueError(
                    f"{path}:{group_name}: kernel {kernel.shape} and bias {bias.shape}, expected {expected} and "
                    f"({layer.out_features},) for a window of {net.window}."
                )
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(kernel.T.astype(np.float32)))
                layer.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def convert_keras_weights(
    conv: str | os.PathLike, fc: str | os.PathLike, bias: str | os.PathLike, conv_rule: str = "any_kernel"
) -> KnowHyperModel:
    """A `KnowHyperModel` holding the weights of the three released files (then `save_pretrained` it).

    `conv_rule="any_kernel"` is what the authors' inference script does with these weights (see `tensor_kind`).
    """
    model = KnowHyperModel(window=5, conv_rule=conv_rule)
    for kind, path in zip(KINDS, (conv, fc, bias), strict=True):
        load_keras_known(path, model.nets[kind])
    return model
