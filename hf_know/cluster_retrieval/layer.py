"""Linear and conv layers with one composed low-rank update per task, applied per sample by routing weights.

A conv layer's task update is LoRA-conv shaped (as peft's LoRA on convs): A_t is a k x k conv from the input channels
to r channels with the base conv's stride, padding and dilation, B_t a 1x1 conv back to the output channels. A_t is
stored flattened ([r, in * k * k]), so composition, orthogonality and retrieval treat both kinds alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn


@dataclass
class Routing:
    """Which task's update each sample of the current forward gets, shared by all layers of a model.

    `weights[adapter]` is [batch, tasks]: a one-hot row routes the sample to one task (hard retrieval, task ids),
    a row with several entries mixes their updates (soft retrieval). An adapter without an entry gets no update,
    which is how the frozen-backbone embedding pass switches the adapters off.
    """

    weights: dict[str, torch.Tensor] | None = None


class ClusterRetrievalLayer(BaseTunerLayer):
    """Holds, per adapter, a low-rank pair (A_t, B_t) per task and the coefficients c_t over earlier tasks.

    Parameters live in `cr_A[adapter][task]` ([r, in]), `cr_B[adapter][task]` ([out, r]) and
    `cr_coef[adapter][task]` ([t], only for t > 0 under learned composition). Only the newest task of an adapter
    is ever trainable: finished tasks are frozen, so they stay bit-identical while later tasks train.
    """

    adapter_layer_names = ("cr_A", "cr_B", "cr_coef")
    other_param_names = ("r", "scaling", "composition", "ortho_mode", "cr_dropout")

    def __init__(self, base_layer: nn.Module, routing: Routing, **kwargs) -> None:
        self.base_layer = base_layer
        self.routing = routing
        self.cr_A = nn.ModuleDict({})
        self.cr_B = nn.ModuleDict({})
        self.cr_coef = nn.ModuleDict({})
        self.cr_dropout = nn.ModuleDict({})
        self.r, self.scaling, self.composition, self.ortho_mode = {}, {}, {}, {}
        self._disable_adapters = False
        self.merged_adapters = []
        base = self.get_base_layer()
        if isinstance(base, nn.Conv2d):
            self.in_features, self.out_features = base.weight[0].numel(), base.out_channels
        else:
            self.in_features, self.out_features = base.in_features, base.out_features

    def update_layer(self, adapter_name: str, config, inference_mode: bool = False) -> None:
        """Create the adapter's (empty) task containers and re-create the tasks listed in `config.task_names`."""
        self.r[adapter_name] = config.r
        self.scaling[adapter_name] = config.lora_alpha / config.r
        self.composition[adapter_name] = config.composition
        self.ortho_mode[adapter_name] = config.ortho_mode
        self.cr_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        for container in (self.cr_A, self.cr_B, self.cr_coef):
            container[adapter_name] = nn.ParameterDict({})
        for task in config.task_names:
            self.add_task(adapter_name, task)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def add_task(self, adapter_name: str, task: str, dtype: torch.dtype | None = None) -> None:
        """Freeze the adapter's current tasks (baking a pending projection into A) and add `task` as the new one,
        its parameters in `dtype` (the base weight's by default)."""
        tasks = self.task_names(adapter_name)
        if tasks and self.ortho_mode[adapter_name] == "projection":
            with torch.no_grad():
                self.cr_A[adapter_name][tasks[-1]].copy_(self._task_A(adapter_name, len(tasks) - 1))
        weight = self.get_base_layer().weight
        dtype = dtype or weight.dtype
        a = torch.empty(self.r[adapter_name], self.in_features, device=weight.device, dtype=torch.float32)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.cr_A[adapter_name][task] = nn.Parameter(a.to(dtype))
        b = torch.zeros(self.out_features, self.r[adapter_name], device=a.device, dtype=dtype)
        self.cr_B[adapter_name][task] = nn.Parameter(b)
        if tasks and self.composition[adapter_name] == "learned":
            self.cr_coef[adapter_name][task] = nn.Parameter(torch.zeros(len(tasks), device=a.device, dtype=dtype))
        self._freeze_non_trainable_peft_weights()

    def task_names(self, adapter_name: str) -> list[str]:
        return list(self.cr_A[adapter_name].keys())

    def _freeze_non_trainable_peft_weights(self, adapter_names=None) -> None:
        """Finished tasks never train again, whatever PEFT's `set_adapter` or `requires_grad_` did before."""
        for container in (self.cr_A, self.cr_B, self.cr_coef):
            for adapter, params in container.items():
                newest = self.task_names(adapter)[-1:]
                for task, param in params.items():
                    if task not in newest:
                        param.requires_grad_(False)

    def _task_A(self, adapter_name: str, index: int) -> torch.Tensor:
        """Task `index`'s A as used in the forward: under `ortho_mode="projection"` the newest task's rows are
        projected onto the orthogonal complement of the earlier tasks' rows."""
        params = list(self.cr_A[adapter_name].values())
        a = params[index]
        if self.ortho_mode[adapter_name] != "projection" or index == 0 or index != len(params) - 1:
            return a
        q, _ = torch.linalg.qr(torch.cat(params[:index]).T)
        return a - (a @ q) @ q.T

    def composition_matrix(self, adapter_name: str) -> torch.Tensor:
        """C[t, j] in float32: the weight of task j's pair in task t's update (1 on the diagonal, 0 above it)."""
        tasks = self.task_names(adapter_name)
        weight = self.get_base_layer().weight
        mode = self.composition[adapter_name]
        rows = []
        for t, task in enumerate(tasks):
            if mode == "learned" and t > 0:
                earlier = self.cr_coef[adapter_name][task].float()
            else:
                earlier = torch.full((t,), float(mode == "sum"), device=weight.device)
            rows.append(torch.cat([earlier, earlier.new_ones(1), earlier.new_zeros(len(tasks) - t - 1)]))
        return torch.stack(rows)

    def delta_weight(self, adapter_name: str, task_index: int) -> torch.Tensor:
        """Task `task_index`'s full composed update ΔW_t in the base weight's shape ([out, in] for a linear layer,
        [out, in, kh, kw] for a conv), in float32 whatever the adapter's dtype."""
        mix = self.composition_matrix(adapter_name)[task_index]
        b = torch.stack([b.float() for b in self.cr_B[adapter_name].values()])
        a = torch.stack([self._task_A(adapter_name, j).float() for j in range(len(mix))])
        delta = self.scaling[adapter_name] * torch.einsum("t,tor,tri->oi", mix, b, a)
        return delta.reshape(self.get_base_layer().weight.shape)

    def _mix(self, x: torch.Tensor, adapter_name: str, weights: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """M = weights @ C (each sample's weight on each task's pair) and the tasks some sample uses."""
        if weights.shape[0] != x.shape[0]:
            raise ValueError(
                f"Routing weights cover {weights.shape[0]} samples but the layer input has batch size "
                f"{x.shape[0]}; route with one entry per sample."
            )
        mix = weights.to(x.dtype) @ self.composition_matrix(adapter_name).to(x.dtype)
        return mix, torch.nonzero(mix.abs().sum(0)).flatten().tolist()

    def _used_pairs(self, adapter_name: str, used: list[int], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The stacked A rows [used * r, in] and B columns [out, used * r] of the used tasks."""
        a = torch.cat([self._task_A(adapter_name, j) for j in used]).to(dtype)
        b = torch.cat([list(self.cr_B[adapter_name].values())[j] for j in used], dim=1).to(dtype)
        return a, b

    def _routed_delta(self, x: torch.Tensor, adapter_name: str, weights: torch.Tensor) -> torch.Tensor:
        """Σ_j M[b, j] · s · B_j A_j x_b for the batch `x` (layer-specific)."""
        raise NotImplementedError

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add the update of the adapter's only task to the base weight; refused for several tasks, whose
        updates are chosen per input and cannot all live in one weight."""
        for adapter in check_adapters_to_merge(self, adapter_names):
            tasks = self.task_names(adapter)
            if len(tasks) != 1:
                raise ValueError(
                    f"Cannot merge adapter {adapter!r}: it holds {len(tasks)} tasks {tasks}, and which task's "
                    "update applies is decided per input by retrieval. Merging needs exactly one task; use "
                    "`unload()` to get the base model back, or keep the adapter for routed inference."
                )
            weight = self.get_base_layer().weight
            merged = weight.data + self.delta_weight(adapter, 0).to(weight.dtype)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"safe_merge refused: merging adapter {adapter!r} gives non-finite weights.")
            weight.data = merged
            self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            weight = self.get_base_layer().weight
            weight.data -= self.delta_weight(adapter, 0).to(weight.dtype)

    def regularization(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L1, L2, orthogonality) terms of the adapter's newest task in this layer; zeros for its first task."""
        tasks = self.task_names(adapter_name)
        zero = self.get_base_layer().weight.new_zeros(())
        if len(tasks) < 2:
            return zero, zero, zero
        coef = self.cr_coef[adapter_name][tasks[-1]] if self.composition[adapter_name] == "learned" else zero
        new = nn.functional.normalize(self.cr_A[adapter_name][tasks[-1]], dim=-1)
        old = nn.functional.normalize(torch.cat([self.cr_A[adapter_name][t] for t in tasks[:-1]]), dim=-1)
        return coef.abs().mean(), coef.pow(2).mean(), (new @ old.T).pow(2).mean()


class _RoutedModule(nn.Module, ClusterRetrievalLayer):
    """The module half of both layers: the base layer's output plus each sample's routed update."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters or self.merged or self.routing.weights is None:
            return result
        for adapter in self.active_adapters:
            weights = self.routing.weights.get(adapter)
            if weights is not None and adapter in self.cr_A and len(self.cr_A[adapter]):
                result = result + self._routed_delta(x, adapter, weights).to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "cluster_retrieval." + super().__repr__()


class Linear(_RoutedModule):
    """`nn.Linear` with routed per-task low-rank updates."""

    def __init__(self, base_layer: nn.Linear, adapter_name: str, config, routing: Routing, **kwargs) -> None:
        super().__init__()
        ClusterRetrievalLayer.__init__(self, base_layer, routing)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, inference_mode=config.inference_mode)

    def _routed_delta(self, x: torch.Tensor, adapter_name: str, weights: torch.Tensor) -> torch.Tensor:
        """Σ_j M[b, j] · s · B_j A_j x_b, computed only for the tasks some sample uses."""
        mix, used = self._mix(x, adapter_name, weights)
        if not used:
            return torch.zeros_like(x[..., :1]).expand(*x.shape[:-1], self.out_features)
        a, b = self._used_pairs(adapter_name, used, x.dtype)
        h = self.cr_dropout[adapter_name](x) @ a.T  # [B, ..., used * r]
        h = h.unflatten(-1, (len(used), self.r[adapter_name]))
        h = h * mix[:, used].reshape(x.shape[0], *([1] * (x.dim() - 2)), len(used), 1)
        return self.scaling[adapter_name] * (h.flatten(-2) @ b.T)


class Conv2d(_RoutedModule):
    """`nn.Conv2d` (k x k or 1 x 1, groups=1) with routed per-task LoRA-conv updates. The A convs run through the
    base layer's own forward with A as its weight, so conv subclasses that pad in their forward ("same" padding)
    keep their geometry."""

    def __init__(self, base_layer: nn.Conv2d, adapter_name: str, config, routing: Routing, **kwargs) -> None:
        super().__init__()
        if base_layer.groups != 1:
            raise ValueError(
                f"ClusterRetrievalAdapterConfig adapts convs with groups=1; this one has groups={base_layer.groups} "
                "(a depthwise or grouped conv): leave it out of target_modules."
            )
        ClusterRetrievalLayer.__init__(self, base_layer, routing)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config, inference_mode=config.inference_mode)

    def _routed_delta(self, x: torch.Tensor, adapter_name: str, weights: torch.Tensor) -> torch.Tensor:
        """Σ_j M[b, j] · s · B_j (A_j * x_b): the used tasks' A convs in one conv, weighted per sample, then B."""
        base = self.get_base_layer()
        mix, used = self._mix(x, adapter_name, weights)
        a, b = self._used_pairs(adapter_name, used or [0], x.dtype)
        parameters = {"weight": a.reshape(len(a), *base.weight.shape[1:])}
        if base.bias is not None:
            parameters["bias"] = a.new_zeros(len(a))
        h = torch.func.functional_call(base, parameters, (self.cr_dropout[adapter_name](x),))  # [B, used*r, H, W]
        if not used:
            return h.new_zeros(h.shape[0], self.out_features, *h.shape[2:])
        h = h.unflatten(1, (len(used), self.r[adapter_name])) * mix[:, used, None, None, None]
        return self.scaling[adapter_name] * torch.einsum("bkhw,ok->bohw", h.flatten(1, 2), b)
